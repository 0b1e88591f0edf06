"""gradscope.integrations.tensorboard.log: write, then read the event file back with
TensorBoard's own EventAccumulator and find every scalar, the per-t series and the image."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import gradscope

pytest.importorskip("tensorboard", reason='needs the tensorboard extra: pip install "gradscope[tensorboard]"')
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from gradscope.integrations import tensorboard as gs_tensorboard  # noqa: E402

T = 7


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 5, batch_first=True)

    def forward(self, x):
        return self.rnn(x)[0][:, -1].sum()


def watched_steps(n, run_dir=None):
    torch.manual_seed(0)
    model = Model()
    with gradscope.watch(model, run_dir=run_dir) as scope:
        for _ in range(n):
            model(torch.randn(2, T, 3)).backward()
    return scope


def read_back(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_scalars_series_and_image_are_in_the_event_file(tmp_path):
    scope = watched_steps(2)
    with SummaryWriter(str(tmp_path)) as writer:
        written_first = gs_tensorboard.log(scope, writer, step=0, global_step=100)
        written = gs_tensorboard.log(scope, writer, global_step=200)
    events = read_back(tmp_path)
    tags = set(events.Tags()["scalars"])
    assert set(written) <= tags
    for key, value in written.items():
        found = events.Scalars(key)
        assert [e.step for e in found] == [100, 200]
        assert found[0].value == pytest.approx(written_first[key], rel=1e-6, nan_ok=True)
        assert found[1].value == pytest.approx(value, rel=1e-6, nan_ok=True)
    assert math.isfinite(events.Scalars("gradscope/rnn/l0/forward/gain")[1].value)

    rows = scope.timesteps()
    for state in ("h", "c"):
        series = events.Scalars(f"gradscope/rnn/l0/forward/grad_norm_per_t/{state}/step1")
        expected = rows[(rows.step == 1) & (rows.state == state)].sort_values("t")
        assert [e.step for e in series] == list(range(T))
        assert [e.value for e in series] == pytest.approx(expected.grad_norm.tolist(), rel=1e-6)

    images = events.Images("gradscope/grad_norm_per_t")
    assert [i.step for i in images] == [100, 200]
    assert images[0].width > 100 and images[0].height > 100


def test_a_loaded_run_and_a_log_folder_path(tmp_path):
    watched_steps(1, run_dir=tmp_path / "run")
    run = gradscope.load(tmp_path / "run")
    written = gs_tensorboard.log(run, tmp_path / "tb")
    events = read_back(tmp_path / "tb")
    assert set(written) <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("gradscope/rnn/l0/forward/sigma_max")] == [0]


def test_nothing_recorded_writes_nothing(tmp_path):
    scope = gradscope.watch(Model())
    with SummaryWriter(str(tmp_path)) as writer:
        written = gs_tensorboard.log(scope, writer)
    assert written and all(math.isnan(v) for v in written.values())
    assert read_back(tmp_path).Tags()["scalars"] == []


def test_without_tensorboard_the_error_names_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['tensorboard'] = None\n"
        "import gradscope, gradscope.integrations.tensorboard as tb, gradscope.integrations.lightning\n"
        "try:\n"
        f"    tb.log(object(), {str(tmp_path)!r})\n"
        "except ImportError as e:\n"
        "    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(Path(__file__).resolve().parent.parent))  # this checkout's gradscope
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'pip install "gradscope[tensorboard]"' in done.stdout
