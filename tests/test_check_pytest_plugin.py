"""The `gradient_health` fixture, loaded through the pytest11 entry point in a fresh pytest."""

import os
import subprocess
import sys
from pathlib import Path

TARGETS_DIR = Path(__file__).resolve().parents[1] / "examples" / "ci"

TEST_FILE = f"""
import sys
sys.path.insert(0, {str(TARGETS_DIR)!r})
from gradient_targets import healthy_lstm, vanishing_rnn

def test_healthy(gradient_health):
    assert gradient_health(*healthy_lstm()).ok

def test_vanishing(gradient_health):
    gradient_health(*vanishing_rnn())

def test_vanishing_with_lenient_rules(gradient_health):
    gradient_health(*vanishing_rnn(), rules={{"min_horizon": 3}})
"""


def run_pytest(folder):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "test_gradients.py"],
        cwd=folder, capture_output=True, text=True, env=env, timeout=300,
    )


def test_fixture_passes_healthy_and_fails_vanishing_with_the_findings(tmp_path):
    (tmp_path / "test_gradients.py").write_text(TEST_FILE)
    (tmp_path / "pyproject.toml").write_text("[tool.gradscope.check]\nmin_gain = 0.1\n")
    result = run_pytest(tmp_path)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "2 passed, 1 failed" in out or "1 failed, 2 passed" in out, out
    assert "FAILED test_gradients.py::test_vanishing - AssertionError" in out
    assert "AssertionError: gradients are not healthy" in out and "vanish" in out


def test_fixture_reads_rules_from_the_rootdir_pyproject(tmp_path):
    (tmp_path / "test_gradients.py").write_text(TEST_FILE)
    (tmp_path / "pyproject.toml").write_text("[tool.gradscope.check]\nmin_horizon = 3\nmin_gain = 0.1\n")
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
