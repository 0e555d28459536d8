# Tunesmith developer commands. `make demo` and `make test` set everything up themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
export TUNESMITH_HOME ?= $(CURDIR)/.tunesmith

.PHONY: setup demo test test-fast protos check-protos up bench lint clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/tunesmith demo

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not integration"

protos: setup
	$(PY) scripts/gen_protos.py

up: setup
	$(VENV)/bin/tunesmith up

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
