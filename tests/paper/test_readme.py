"""The README's code: its Python snippets run, and its test command is the one CI runs."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
# What each snippet shows, and a line only it contains.
SHOWN = {
    "plain_jax": "from agile import agile, agile_relu",
    "linen": "class MyModel(nn.Module)",
    "act_factory": 'model = ResNet(act=agile_factory("relu"))',
    "combined": "from agile import CombinedAgile, combined",
    "optax_linen": "labels = param_labels(params, model, x)",
    "nnx": "from agile.nnx import Agile, CombinedAgile",
    "fold": "from agile.fold import chain, fold",
}


def test_readme_shows_plain_jax_linen_factory_combined_optax_nnx_and_fold_snippets():
    assert len(SNIPPETS) == len(SHOWN)
    for name, marker in SHOWN.items():
        assert sum(marker in snippet for snippet in SNIPPETS) == 1, name


def _snippet_id(snippet: str) -> str:
    return next((name for name, marker in SHOWN.items() if marker in snippet), "unknown")


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[_snippet_id(s) for s in SNIPPETS])
def test_readme_snippet_runs(snippet):
    """Each snippet runs as written; the NNX one trains a few steps and asserts its loss fell."""
    exec(compile(snippet, "README.md", "exec"), {})


def test_readme_figure_exists_and_is_small():
    for path in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", README):
        figure = Path(__file__).resolve().parents[2] / path
        assert figure.read_bytes().startswith(b"\x89PNG") and figure.stat().st_size < 300_000


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README)
    test_command = next(c for c in commands if "pytest" in c)
    ci_script = (Path(__file__).resolve().parents[2] / ".ci/run").read_text()
    assert test_command in ci_script
