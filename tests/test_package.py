"""The house: the library (agile) imports without the study (agile.paper) or its extras."""

import subprocess
import sys

from conftest import REPO_ROOT

# What `pip install .[experiments]` adds and `pip install .` (jax, flax, optax and their own
# dependencies) does not have. absl, orbax and scipy are dependencies of optax, flax and jax.
EXTRAS_ONLY = ("ml_collections", "clu", "tensorboard", "tensorflow", "tensorflow_datasets",
               "matplotlib", "ray")
LIBRARY = ("agile", "agile.activations", "agile.errors", "agile.fold", "agile.labels",
           "agile.layers", "agile.nnx", "agile.plotting")

BLOCK = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS_ONLY!r}:
            raise ImportError(f"No module named {{name!r}} (blocked)")
sys.meta_path.insert(0, Block())
"""


def _python(program: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def test_library_imports_without_the_extras_and_imports_nothing_of_the_study():
    program = BLOCK + f"""
import importlib
for name in {LIBRARY!r}:
    importlib.import_module(name)
study = sorted(m for m in sys.modules if m.startswith("agile.paper"))
assert not study, study
print("ok")
"""
    result = _python(program)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_plotting_without_matplotlib_says_how_to_install_it():
    program = BLOCK + """
import agile.plotting
try:
    agile.plotting.plot_activations({"act": {"a": [1.0], "b": [0.0]}}, {"act": "agile_relu"})
except ImportError as err:
    print(err)
"""
    result = _python(program)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "agile.plotting draws with matplotlib, which cannot be imported" in result.stdout
    assert "pip install matplotlib" in result.stdout


def test_no_module_of_the_package_is_part_of_an_import_cycle():
    """Every import between agile's own modules points one way (lazy ones in functions too)."""
    program = """
import ast, pathlib, sys
root = pathlib.Path("agile")
names = {".".join(p.with_suffix("").parts).removesuffix(".__init__"): p
         for p in root.rglob("*.py")}
graph = {}
for name, path in names.items():
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("agile"):
            deps.add(node.module)
            deps.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name.startswith("agile"))
    graph[name] = {d for d in deps if d in names and d != name}
state = {}
def visit(node, stack):
    state[node] = "open"
    for dep in graph[node]:
        if state.get(dep) == "open":
            sys.exit("cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
        if dep not in state:
            visit(dep, stack + [dep])
    state[node] = "done"
for node in graph:
    if node not in state:
        visit(node, [node])
print(len(graph), "modules")
"""
    result = _python(program)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout
