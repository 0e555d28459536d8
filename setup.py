"""Map the `tunesmith` namespace, spread over three source roots, to its folders.

Metadata lives in pyproject.toml. setuptools' packages.find cannot merge one namespace package
across several `where` roots, so every package is listed with its own folder here.
"""
from pathlib import Path

from setuptools import find_namespace_packages, setup

ROOTS = ("services", "plugins", "clients/python")
HERE = Path(__file__).parent


def _packages() -> dict[str, str]:
    mapping: dict[str, str] = {}
    for root in ROOTS:
        for name in find_namespace_packages(where=str(HERE / root), include=["tunesmith*"]):
            folder = f"{root}/{name.replace('.', '/')}"
            if name in mapping and name != "tunesmith":
                raise RuntimeError(f"package {name} is defined in {mapping[name]} and {folder}")
            mapping.setdefault(name, folder)
    mapping.pop("tunesmith", None)  # the namespace itself owns no files
    return mapping


PACKAGE_DIRS = _packages()
setup(packages=sorted(PACKAGE_DIRS), package_dir=PACKAGE_DIRS)
