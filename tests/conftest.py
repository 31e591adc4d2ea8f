"""Set-up shared by every test: JAX's persistent compilation cache.

Tests share ``.jax_cache/`` in the checkout (ignored by git), so a program compiled by one test
process, or by a subprocess a test starts, is not compiled again; results do not depend on it.
This file imports only what the library needs (jax): ``tests/library`` runs with the library
alone installed (``tools/test_floors.sh``); the study's fixtures are in ``tests/paper``.
"""

import os

import jax
from agile_testing import REPO_ROOT

# Subprocesses read the environment; this process is configured directly (jax is imported).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO_ROOT / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
