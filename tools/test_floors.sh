#!/usr/bin/env bash
# Tests the library at its version floors: builds a fresh venv with exactly the oldest jax,
# jaxlib, flax and optax that pyproject.toml's [project] dependencies allow (">=X" -> "==X"),
# installs the library from this checkout with them, and runs the library's tests there.
#
#   tools/test_floors.sh [VENV_DIR]        (default /tmp/agile-floors; needs the package index)
#
# Not part of .ci/run: it downloads a second jax/flax stack. Run it when a floor changes or a
# library change may use a newer API. The tests need pytest, pytest-xdist and numpy, nothing
# of the experiments; test_plotting is left out (it needs matplotlib and flax >= 0.12's
# nnx.List).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-/tmp/agile-floors}"
PYTHON="${PYTHON:-python3}"

mapfile -t PINS < <("$PYTHON" - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
floors = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", d).groups() for d in deps)
floors["jaxlib"] = floors["jax"]
for name in ("jax", "jaxlib", "flax", "optax"):
    print(f"{name}=={floors[name]}")
PY
)
echo "floors: ${PINS[*]}"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q "$PWD" "${PINS[@]}" pytest pytest-xdist numpy
"$VENV/bin/python" -c "import jax, jaxlib, flax, optax; print('installed: jax', jax.__version__,
    'jaxlib', jaxlib.__version__, 'flax', flax.__version__, 'optax', optax.__version__)"
PYTHONPATH="$PWD" "$VENV/bin/python" -m pytest -q -p no:cacheprovider -n 0 \
    tests/library --ignore=tests/library/test_plotting.py
