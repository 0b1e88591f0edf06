"""`gradscope demo` at tiny settings: three run folders, one comparison report with task loss."""

import json
from pathlib import Path

import pytest

import gradscope
from gradscope.cli import main
from gradscope.commands import demo as demo_command
from gradscope.tasks import demo as demo_runner

TINY = ["--steps", "6", "--seq-len", "20", "--hidden", "8", "--every", "2"]


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    code = main(["demo", *TINY, "--out", str(out)])
    return code, out


def test_tiny_demo_writes_a_report_with_all_three_models(tiny_demo, capsys):
    code, out = tiny_demo
    assert code == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    for kind in ("RNN", "GRU", "LSTM"):
        assert kind in page
        assert (out / "runs" / kind / "meta.json").is_file()
    assert list(out.glob("figures/*.png")), "the comparison report has figures"
    assert (out / "task-loss.png").stat().st_size > 10_000
    assert 'src="task-loss.png"' in page


def test_report_states_task_loss_against_the_baseline_and_gain_and_horizon(tiny_demo):
    _, out = tiny_demo
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Task loss against the trivial baseline" in page
    assert "0.1667" in page  # the adding problem's baseline MSE
    results = json.loads((out / "demo.json").read_text(encoding="utf-8"))
    assert [m["model"] for m in results["models"]] == ["RNN", "GRU", "LSTM"]
    for m in results["models"]:
        assert m["eval_loss"] > 0 and 0 < m["gain"] and m["horizon"] is not None
        assert f"{m['eval_loss']:.4f}" in page
    assert results["task"]["baseline"] == pytest.approx(1 / 6)


def test_each_run_folder_loads_and_carries_the_task_numbers(tiny_demo):
    _, out = tiny_demo
    for kind in ("RNN", "GRU", "LSTM"):
        run = gradscope.load(out / "runs" / kind)
        assert run.name == kind
        steps = sorted(run.timesteps()["step"].unique())
        assert steps == [0, 2, 4]  # every=2 over 6 steps
        assert run.meta["task"]["task"] == "adding" and run.meta["task"]["seq_len"] == 20
        assert run.meta["task"]["eval_loss"] > 0


def test_printed_table_names_every_model_and_the_report(tmp_path, capsys):
    results = demo_runner.run_demo(steps=2, seq_len=12, hidden=4, every=1, out=tmp_path, kinds=("RNN", "LSTM"))
    text = demo_runner.format_results(results)
    assert "baseline MSE 0.1667" in text and "RNN" in text and "LSTM" in text and "GRU" not in text
    assert str(tmp_path / "index.html") in text


def test_rerun_into_the_same_folder_replaces_the_old_runs(tmp_path):
    for steps in (2, 4):
        assert main(["demo", "--steps", str(steps), "--seq-len", "12", "--hidden", "4", "--every", "1",
                     "--out", str(tmp_path)]) == 0
    run = gradscope.load(tmp_path / "runs" / "GRU")
    assert sorted(run.timesteps()["step"].unique()) == [0, 1, 2, 3]


def test_foreign_folder_in_the_way_is_left_alone(tmp_path, capsys):
    blocked = tmp_path / "runs" / "RNN"
    blocked.mkdir(parents=True)
    (blocked / "notes.txt").write_text("mine")
    assert main(["demo", "--steps", "2", "--seq-len", "12", "--hidden", "4", "--out", str(tmp_path)]) == 2
    assert "not a gradscope run folder" in capsys.readouterr().err
    assert (blocked / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("flag", ["--steps", "--seq-len", "--hidden", "--every"])
def test_nonpositive_numbers_are_usage_errors(flag, tmp_path, capsys):
    argv = ["demo", *TINY, "--out", str(tmp_path)]
    argv[argv.index(flag) + 1] = "0"
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert flag in capsys.readouterr().err


def test_a_sequence_too_short_for_the_task_is_a_usage_error(tmp_path, capsys):
    assert main(["demo", "--task", "copy", "--seq-len", "8", "--out", str(tmp_path)]) == 2
    assert "--seq-len" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_the_runner_checks_its_numbers_too(tmp_path):
    with pytest.raises(ValueError, match="hidden must be a whole number >= 1"):
        demo_runner.run_demo(hidden=0, out=tmp_path)


@pytest.mark.parametrize("task", ["copy", "charlm"])
def test_other_tasks_run_and_report_their_baseline(task, tmp_path):
    results = demo_runner.run_demo(task=task, steps=2, seq_len=14, hidden=4, every=1, out=tmp_path, kinds=("GRU",))
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert results["task"]["task"] == task and "cross-entropy" in results["task"]["loss_name"]
    assert f"{results['task']['baseline']:.4f}" in page


def test_demo_leaves_torch_threads_as_they_were(tmp_path):
    import torch

    before = torch.get_num_threads()
    demo_runner.run_demo(steps=1, seq_len=8, hidden=4, every=1, out=tmp_path, kinds=("RNN",), threads=1)
    assert torch.get_num_threads() == before


def test_command_defaults_are_the_runners_and_load_without_torch():
    import subprocess
    import sys

    assert demo_command.DEFAULTS is demo_runner.DEFAULTS
    code = "import sys, gradscope.commands.demo; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(Path(demo_command.__file__).parents[2]))
    assert done.stdout.strip() == "False", done.stderr[-2000:]
