"""Pipelines are found by scanning the ``pipelines`` package; nobody edits a registry.

Every public module ``pipelines/<name>.py`` must expose
``build(settings, *, source=None, sink=None) -> Dataflow``; a module without it is an error.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from bytewax.dataflow import Dataflow

import pipelines
from crowdwatch.flow import PipelineConfigError

Build = Callable[..., Dataflow]


def discover() -> dict[str, Build]:
    """Every pipeline's ``build`` by module name.

    Raises:
        PipelineConfigError: a pipeline module has no callable ``build``.
    """
    found: dict[str, Build] = {}
    for module_info in pkgutil.iter_modules(pipelines.__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"pipelines.{module_info.name}")
        build: Any = getattr(module, "build", None)
        if not callable(build):
            raise PipelineConfigError(
                f"pipelines/{module_info.name}.py has no build(settings, *, source=None, "
                "sink=None) -> Dataflow; every module in pipelines/ is a pipeline (prefix "
                "helpers with _)"
            )
        found[module_info.name] = build
    return found


def get(name: str) -> Build:
    """One pipeline's ``build``; an unknown name lists the known ones."""
    found = discover()
    if name not in found:
        raise PipelineConfigError(f"no pipeline {name!r}; known: {', '.join(sorted(found))}")
    return found[name]
