"""The README's and the library guide's code: their Python snippets run, their figures exist, and
the README's test command is the one CI runs."""

import re

import pytest
from agile_testing import REPO_ROOT

# The pages whose Python snippets are run: the README (the front door's short example) and the
# library guide it links to (the snippets that were the README's before #26).
PAGES = ("README.md", "docs/library.md")
TEXTS = {page: (REPO_ROOT / page).read_text() for page in PAGES}
README = TEXTS["README.md"]
SNIPPETS = [(page, snippet) for page, text in TEXTS.items()
            for snippet in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)]
# What each snippet shows, the page it is on, and a line only it contains.
SHOWN = {
    "readme_example": ("README.md", "class Net(nn.Module)"),
    "plain_jax": ("docs/library.md", "from agile import agile, agile_relu"),
    "linen": ("docs/library.md", "class MyModel(nn.Module)"),
    "act_factory": ("docs/library.md", 'model = ResNet(act=agile_factory("relu"))'),
    "combined": ("docs/library.md", "from agile import CombinedAgile, combined"),
    "optax_linen": ("docs/library.md", "labels = param_labels(params, model, x)"),
    "nnx": ("docs/library.md", "from agile.nnx import Agile, CombinedAgile"),
    "fold": ("docs/library.md", "from agile.folding import chain"),
}


def test_readme_and_library_guide_show_each_snippet_once_where_expected():
    """The README shows its short example; the guide plain JAX, linen, factories, combined, optax,
    NNX and fold: each snippet exactly once, on its page, and no other snippet."""
    assert len(SNIPPETS) == len(SHOWN)
    for name, (page, marker) in SHOWN.items():
        assert [p for p, snippet in SNIPPETS if marker in snippet] == [page], name


def test_readme_example_is_short_and_shows_plain_jax_linen_and_nnx():
    """#26: the front door's example is about 15 lines of code and uses all three APIs."""
    (example,) = [s for p, s in SNIPPETS if p == "README.md"]
    code = [line for line in example.splitlines() if line.strip()]
    assert len(code) <= 20
    assert "agile.agile_relu(" in example and "nn.Module" in example and "agile.nnx." in example


def _snippet_id(page_snippet: tuple[str, str]) -> str:
    snippet = page_snippet[1]
    return next((name for name, (_, marker) in SHOWN.items() if marker in snippet), "unknown")


# The snippets that train or compile most run in the full suite only (CI runs every one); the
# fast suite runs the README's own example.
HEAVY = ("act_factory", "linen", "nnx", "fold")


@pytest.mark.parametrize("page_snippet", [
    pytest.param(s, marks=pytest.mark.slow) if _snippet_id(s) in HEAVY else s for s in SNIPPETS
], ids=[_snippet_id(s) for s in SNIPPETS])
def test_readme_snippet_runs(page_snippet):
    """Each snippet runs as written; the NNX one trains a few steps and asserts its loss fell."""
    page, snippet = page_snippet
    exec(compile(snippet, page, "exec"), {})


@pytest.mark.parametrize("page", PAGES)
def test_readme_figure_exists_and_is_small(page):
    """Every figure a page shows exists (its path relative to the page) and is a small PNG."""
    paths = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", TEXTS[page])
    assert paths, page
    for path in paths:
        figure = (REPO_ROOT / page).parent / path
        assert figure.read_bytes().startswith(b"\x89PNG") and figure.stat().st_size < 300_000


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README)
    test_command = next(c for c in commands if "pytest" in c)
    ci_script = (REPO_ROOT / ".ci/run").read_text()
    assert test_command in ci_script
