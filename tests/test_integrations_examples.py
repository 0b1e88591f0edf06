"""examples/lightning_callback.py and examples/ddp_gloo.py (under torchrun) run at their small size
and leave what their docstrings promise."""

import csv
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

import gradscope

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.filterwarnings("ignore:.*LeafSpec")
def test_lightning_example_logs_metrics_and_writes_the_report(tmp_path):
    pytest.importorskip("lightning", reason='needs the lightning extra: pip install "gradscope[lightning]"')
    spec = importlib.util.spec_from_file_location("example_lightning_callback", EXAMPLES / "lightning_callback.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    callback, diagnosis = example.main(small=True, out=tmp_path / "pl")
    assert (tmp_path / "pl" / "index.html").is_file()
    assert callback.run_dir == tmp_path / "pl" / "runs" / "fit-0"
    assert list(diagnosis.summary()["module"]) == ["rnn"]
    # 2 epochs x 6 batches = 12 steps, every 5th recorded: steps 0, 5, 10
    assert gradscope.load(callback.run_dir).steps() == [0, 5, 10]
    (log,) = (tmp_path / "pl" / "logs").rglob("metrics.csv")
    with open(log, newline="") as f:
        gains = [row["gradscope/rnn/l0/forward/gain"] for row in csv.DictReader(f)]
    assert len([g for g in gains if g]) == 3


@pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")
def test_ddp_example_under_torchrun_writes_the_mean_from_rank_0(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(EXAMPLES / "ddp_gloo.py"), "--small", "--out", str(tmp_path / "ddp")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "rank 0: 72 rows of its own" in done.stdout and "rank 1: 72 rows of its own" in done.stdout
    run = gradscope.load(tmp_path / "ddp" / "run")
    assert run.meta["distributed"]["world_size"] == 2
    assert run.steps() == [0, 2, 4]
    assert (run.timesteps()["batch"] == 64).all()  # 32 sequences on each of the 2 ranks
    assert (tmp_path / "ddp" / "index.html").is_file()
