"""`gradscope check TARGET` end to end: exit codes, verdict table, JSON, JUnit, step summary."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gradscope.cli import main

TARGETS = Path(__file__).resolve().parents[1] / "examples" / "ci" / "gradient_targets.py"
HEALTHY = f"{TARGETS}:healthy_lstm"
VANISHING = f"{TARGETS}:vanishing_rnn"


@pytest.fixture(autouse=True)
def no_ambient_config(tmp_path, monkeypatch):
    """Run in an empty folder, so no pyproject.toml nearby changes the rules."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def test_healthy_lstm_exits_0(capsys):
    assert main(["check", HEALTHY]) == 0
    out = capsys.readouterr().out
    assert "recurrent" in out and "healthy" in out
    assert out.rstrip().splitlines()[-1].startswith("gradscope check: HEALTHY")


def test_vanishing_rnn_exits_1_and_writes_every_output(tmp_path, capsys, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code = main(["check", VANISHING, "--json", "out/d.json", "--junit", "out/junit.xml"])
    assert code == 1
    out = capsys.readouterr().out
    assert "vanishing" in out and "advice:" in out and "UNHEALTHY" in out

    data = json.loads((tmp_path / "out" / "d.json").read_text())
    assert data["ok"] is False
    assert any(f["kind"] == "vanishing" for f in data["findings"])

    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    failures = root.findall(".//testcase/failure")
    assert failures and "vanishing" in failures[0].get("type")
    assert root.find(".//testcase").get("name") == "recurrent l0 forward"

    text = summary.read_text()
    assert text.startswith("earlier step\n") and "❌ unhealthy" in text and "vanishing" in text


def test_rules_from_flags_and_config(tmp_path, capsys):
    # a required horizon of 3 steps and a permissive minimum gain make the vanishing RNN pass
    lenient = ["--rule", "min_horizon=3", "--rule", "min_gain=0.1"]
    assert main(["check", VANISHING, *lenient]) == 0
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.gradscope.check]\ntarget = "{VANISHING}"\nmin_horizon = 3\nmin_gain = 0.1\n'
    )
    assert main(["check"]) == 0, "target and rules from ./pyproject.toml"
    assert main(["check", "--rule", "min_horizon=100"]) == 1, "flags win over the file"
    capsys.readouterr()


@pytest.mark.parametrize("argv, words", [
    (["check", f"{TARGETS}:no_such_function"], ["function missing", "no_such_function", "healthy_lstm"]),
    (["check", "gradscope_no_such_module:make"], ["module not found", "gradscope_no_such_module"]),
    (["check", "no/such/file.py:make"], ["file not found", "no/such/file.py"]),
    (["check", "just_a_name"], ["bad target"]),
    (["check"], ["no TARGET given"]),
    (["check", HEALTHY, "--rule", "min_horizn=3"], ["unknown rule min_horizn", "min_horizon"]),
    (["check", HEALTHY, "--config", "missing.toml"], ["config file not found"]),
])
def test_usage_and_target_errors_exit_2_and_say_why(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err


def test_a_step_that_raises_exits_2_with_its_traceback(tmp_path, capsys):
    (tmp_path / "t.py").write_text(
        "import torch\n"
        "def make():\n"
        "    model = torch.nn.GRU(2, 3)\n"
        "    def step():\n"
        "        raise KeyError('batch missing')\n"
        "    return model, step\n"
    )
    assert main(["check", "t.py:make"]) == 2
    err = capsys.readouterr().err
    assert "step raised" in err and "batch missing" in err and "Traceback" in err


def test_a_step_without_backward_fails_the_gate_saying_nothing_was_measured(tmp_path, capsys):
    # issue 15 item 7: a gate that measured nothing has not passed; it fails like an unhealthy
    # model (exit 1) and still writes its outputs, with the reason
    (tmp_path / "t.py").write_text(
        "import torch\n"
        "def no_backward():\n"
        "    model = torch.nn.GRU(2, 3)\n"
        "    return model, lambda: model(torch.randn(5, 1, 2))\n"
    )
    assert main(["check", "t.py:no_backward", "--json", "d.json", "--junit", "j.xml"]) == 1
    captured = capsys.readouterr()
    assert "nothing was measured" in captured.err and "backward" in captured.err
    assert captured.out.rstrip().splitlines()[-1].startswith("gradscope check: UNHEALTHY: nothing was measured")
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["ok"] is False and [f["kind"] for f in data["findings"]] == ["no_steps"]
    failure = ET.parse(tmp_path / "j.xml").getroot().find(".//testcase/failure")
    assert failure is not None and failure.get("type") == "no_steps"


def test_help_lists_the_rules(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--rule NAME=VALUE" in out and "min_horizon" in out and "horizon_ratio" in out


def test_console_script_in_a_subprocess(tmp_path):
    script = Path(sys.executable).with_name("gradscope")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gradscope"]
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    result = subprocess.run([*command, "check", VANISHING, "--steps", "2"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "vanishing" in result.stdout and "UNHEALTHY" in result.stdout


def test_the_example_workflow_checks_a_target_that_exists(monkeypatch):
    import re

    from gradscope.gate.targets import load_target

    workflow = (TARGETS.parent / "gradient-health.yml").read_text()
    targets = re.findall(r"gradscope check (\S+)", workflow)
    assert targets, "the workflow runs no `gradscope check TARGET`"
    monkeypatch.chdir(TARGETS.parents[2])  # the workflow runs at the repository root
    for target in targets:
        model, step = load_target(target)
        assert callable(step)
