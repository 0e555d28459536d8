"""One model under test, loaded for an evaluation: a stored model, or a base plus a peft adapter
run without merging (any PEFT method). Generation and log-likelihoods go through the inference
backend plugin, in batches, so every kind of model is scored the same way."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from tunesmith.core.contracts import Generation, LogLikelihood, Sampling

ADAPTER_NAME = "under-test"
#: (context, continuation) pairs per loglikelihood call: bounds memory, keeps progress moving.
LOGLIKELIHOOD_CHUNK = 64

Progress = Callable[[int, float, int], None]  # (rows done in this call, seconds, tokens)


class ModelRun:
    """Context manager: `with ModelRun(runtime, backend, mut) as run: run.generate(...)`.

    mut: an evaluator_pb2.ModelUnderTest (model, optional adapter). The backend model is loaded
    with adapters enabled only when there is an adapter; the adapter is loaded under
    ADAPTER_NAME and every call runs with it."""

    def __init__(self, runtime, backend, mut):
        self.runtime, self.backend, self.mut = runtime, backend, mut
        self.model_path = runtime.models.local_path(mut.model)
        self.loaded = None
        self.adapter: str | None = None

    def __enter__(self) -> ModelRun:
        self.loaded = self.backend.load(self.model_path, enable_adapters=bool(self.mut.adapter.uri))
        try:
            if self.mut.adapter.uri:
                folder = self.runtime.storage.local_path(self.mut.adapter.uri)
                self.loaded.load_adapter(ADAPTER_NAME, str(folder))
                self.adapter = ADAPTER_NAME
        except BaseException:
            self.loaded.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.loaded is not None:
            self.loaded.close()

    def generate(self, prompts: Sequence[str], sampling: Sampling, *, batch: int,
                 on_batch: Progress | None = None, check: Callable[[], None] | None = None) -> tuple[list[Generation], float]:
        """Answers in prompt order, and the seconds generation took."""
        out: list[Generation] = []
        start = time.perf_counter()
        for i in range(0, len(prompts), batch):
            if check:
                check()
            results = self.loaded.generate(list(prompts[i:i + batch]), sampling, adapter=self.adapter)
            out.extend(results)
            if on_batch:
                on_batch(len(results), time.perf_counter() - start, sum(g.completion_tokens for g in results))
        return out, time.perf_counter() - start

    def loglikelihood(self, requests: Sequence[tuple[str, str]], *,
                      check: Callable[[], None] | None = None) -> list[LogLikelihood]:
        out: list[LogLikelihood] = []
        for i in range(0, len(requests), LOGLIKELIHOOD_CHUNK):
            if check:
                check()
            out.extend(self.loaded.loglikelihood(list(requests[i:i + LOGLIKELIHOOD_CHUNK]), adapter=self.adapter))
        return out


def model_reference(mut) -> str:
    """How reports and leaderboards name a model under test: the model, plus "+<adapter URI>"."""
    return f"{mut.model}+{mut.adapter.uri}" if mut.adapter.uri else mut.model
