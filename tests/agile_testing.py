"""Helpers for every test (library and study): only the standard library, numpy and jax."""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from pathlib import Path

import jax
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout the tests run in
BENCHMARKS = REPO_ROOT / "benchmarks"

# XLA options for tiny test programs: they compile faster at level 0 (same results in tests
# that compare against a reference computed the same way).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def compiled_init(model, rng, *inputs, **static):
    """``model.init(rng, *inputs, **static)`` (a linen module) as one program compiled at
    :data:`FAST_COMPILE`. Run eagerly, ``init`` compiles each of its ops on its own at XLA's
    default level, and each random initialiser's threefry takes seconds to compile: most of
    the time of a test that only builds a ResNet or a folded model. The values may differ
    from eager ``init`` in the last bits; tests that compare against eager use ``model.init``."""
    init = jax.jit(functools.partial(model.init, **static))
    return init.lower(rng, *inputs).compile(FAST_COMPILE)(rng, *inputs)


def load_module(path: Path) -> types.ModuleType:
    """Imports the program at ``path`` (a script, not a package module) as a module of its
    name, with its folder on ``sys.path`` as it has when run (benchmarks import their helper)."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def assert_trees_close(actual, expected, rtol: float = 1e-6, atol: float = 1e-6) -> None:
    """Every leaf of ``actual`` close to the same leaf of ``expected`` (same structure)."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def first_fast(cases, fast: int = 1, *, multiple_args: bool = False) -> list:
    """``pytest.mark.parametrize`` cases with all but the first ``fast`` marked slow: the fast
    suite (``-m "not slow"``) checks the first, the full suite (CI) every case. Cases of
    several arguments (tuples) need ``multiple_args``."""
    import pytest

    return [case if index < fast else
            pytest.param(*(case if multiple_args else (case,)), marks=pytest.mark.slow)
            for index, case in enumerate(cases)]
