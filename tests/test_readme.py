"""The README's code: its Python snippets run, and its test command is the one CI runs."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_readme_has_the_plain_jax_and_flax_snippets():
    assert len(SNIPPETS) == 2
    assert "from agile import agile" in SNIPPETS[0] and "Agile(" in SNIPPETS[1]


@pytest.mark.parametrize("snippet", SNIPPETS, ids=["plain_jax", "flax"])
def test_readme_snippet_runs(snippet):
    exec(compile(snippet, "README.md", "exec"), {})


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README)
    test_command = next(c for c in commands if "pytest" in c)
    ci_script = (Path(__file__).resolve().parents[1] / ".ci/run").read_text()
    assert test_command in ci_script
