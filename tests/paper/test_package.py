"""The house: the library (agile) imports without the study (agile.paper) or its extras."""

import re
import subprocess
import sys

import pytest
from agile_testing import REPO_ROOT

# What `pip install .[experiments]` adds and `pip install .` (jax, flax, optax and their own
# dependencies) does not have. absl, orbax and scipy are dependencies of optax, flax and jax.
EXTRAS_ONLY = ("ml_collections", "clu", "tensorboard", "tensorflow", "tensorflow_datasets",
               "matplotlib", "ray")
LIBRARY = ("agile", "agile.activations", "agile.errors", "agile.fold", "agile.folding",
           "agile.labels", "agile.layers", "agile.nnx", "agile.plotting")

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


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_study_without_its_extra_names_the_extra_to_install():
    """#27 F9: ``import agile.paper.train`` without ml_collections said only "No module named
    'ml_collections'"."""
    program = BLOCK + """
try:
    import agile.paper.train
except ImportError as err:
    print(err)
"""
    result = _python(program)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pip install 'agile-activations[experiments]'" in result.stdout
    assert "ml_collections" in result.stdout and "\n" not in result.stdout.strip()


@pytest.mark.slow
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


def _project() -> dict:
    import tomllib  # Python 3.11+, as the project's pins

    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.match(r"\d+(\.\d+)*", text).group().split("."))


def test_distribution_name_licence_citation_and_changelog():
    """A free distribution name, Apache-2.0 (file and metadata), a valid-looking CITATION.cff
    of this version citing the paper, and a changelog naming 0.2's and 0.3's breaking changes."""
    import yaml  # a dependency of flax

    import agile

    project = _project()
    assert project["name"] == "agile-activations"  # "agile" on PyPI is another project
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert project["authors"] == [{"name": "agile developers"}]
    assert agile.__version__ == "0.4.0"
    licence = (REPO_ROOT / "LICENSE").read_text()
    assert licence.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    assert "END OF TERMS AND CONDITIONS" in licence and len(licence.splitlines()) == 202
    citation = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["version"] == agile.__version__
    assert citation["license"] == "Apache-2.0"
    paper = citation["preferred-citation"]
    assert paper["title"] == (
        "Performance Improvement Method of Convolutional Neural Network Using Agile "
        "Activation Function"
    )
    assert paper["year"] == 2020
    assert [a["family-names"] for a in paper["authors"]] == ["Kong", "Ko", "Ko"]
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text()
    sections = re.findall(r"^## (\S+) — (.+)$", changelog, flags=re.MULTILINE)
    assert sections == [("0.4.0", "2026-12-07"), ("0.3.0", "2026-12-07"), ("0.2.0", "2026-11-29"),
                        ("0.1.0", "2026-11-28")]
    v02 = changelog.split("## 0.2.0")[1].split("## 0.1.0")[0]
    assert 'Default granularity `"element"` -> `"channel"`' in v02
    assert "Every\n  parameter shape" in v02
    v03 = changelog.split("## 0.3.0")[1].split("## 0.2.0")[0]
    for change in ("NNX layers have no default shape", "agile-activations", "agile.paper",
                   "benchmarks/", "jax>=0.6.0"):
        assert change in v03, change


def test_dependency_floors_are_declared_and_tested_by_the_floors_script():
    """[project] dependencies carry floors; tools/test_floors.sh installs exactly those (not in
    CI); agile.nnx refuses an older flax; the pinned set here satisfies them."""
    from importlib.metadata import version

    import agile.nnx

    floors = dict(re.fullmatch(r"(\w+)>=([\d.]+)", d).groups() for d in _project()["dependencies"])
    assert set(floors) == {"jax", "flax", "optax"}
    assert _version(floors["flax"]) == agile.nnx.FLAX_FLOOR
    for name, floor in floors.items():
        assert _version(version(name)) >= _version(floor), name
    script = REPO_ROOT / "tools" / "test_floors.sh"
    assert script.stat().st_mode & 0o111  # executable
    text = script.read_text()
    assert 'floors["jaxlib"] = floors["jax"]' in text and "tests/library " in text
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "test_floors" not in ci
    assert "tools/test_floors.sh" in (REPO_ROOT / "README.md").read_text()


@pytest.mark.slow
def test_the_report_and_plot_run_read_files_without_the_trainer_or_orbax():
    """agile.paper.files (file names, atomic writes, JSON rows) imports only the standard
    library; the report reads and writes results through it without loading orbax or the
    trainer, and plot_run (which reads checkpoints, so orbax) without the trainer or sweeps."""
    files = REPO_ROOT / "agile" / "paper" / "files.py"
    imported = set(re.findall(r"^(?:from|import) ([\w.]+)", files.read_text(), re.MULTILINE))
    outside = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}
    assert outside == {"agile.errors"}, outside
    program = """
import sys
import agile.paper.files, agile.paper.report
loaded = sorted(m for m in sys.modules
                if m.split(".")[0] == "orbax" or m in ("agile.paper.train", "agile.paper.workdir"))
assert not loaded, loaded
import importlib.util
spec = importlib.util.spec_from_file_location("plot_run", "scripts/plot_run.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
loaded = sorted(m for m in sys.modules if m in ("agile.paper.train", "agile.paper.sweep"))
assert not loaded, loaded
print("ok")
"""
    result = _python(program)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
