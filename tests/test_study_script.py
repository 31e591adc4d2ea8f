"""scripts/study.py: one-line errors for bad flags.

Every command here runs with the temporary folder as its working directory and its output
folders in it, so a failing test cannot touch this checkout's docs/.
"""

import subprocess
import sys

import pytest
from conftest import REPO_ROOT

SCRIPT = str(REPO_ROOT / "scripts" / "study.py")


def _study(tmp_path, *args, env=None):
    """scripts/study.py with ``args``, run in ``tmp_path`` (not in this checkout)."""
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env=env)


@pytest.mark.parametrize("args, message", [
    (["--groups="], "error: --groups is empty: name at least one of table1, dense_only"),
    (["--groups=dense_only", "--seeds=0"], "error: The seed count must be at least 1, got 0"),
    (["--groups=dense_only", "--overrides=num_epochs=abc"],
     "error: --overrides num_epochs=abc: the value 'abc' is not JSON"),
    (["--groups=dense_only", "--overrides=model.conv_features=[8,4],num_epochs=x"],
     "error: --overrides num_epochs=x: the value 'x' is not JSON"),
])
def test_bad_flags_are_one_line_and_create_nothing(tmp_path, args, message):
    """#142, #145, #146, #148: one line each (no traceback), before any folder is made."""
    done = _study(tmp_path, f"--workdir={tmp_path / 'study'}",
                  f"--results_dir={tmp_path / 'docs' / 'results'}", *args)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in done.stderr and not (tmp_path / "study").exists()
