"""scope.metrics(): flat, stable keys; the numbers of the chosen step (against the analytic
oracle: a linear-regime tanh RNN with W_hh = s*Q has gain s and sigma_max s); NaN, never a
missing key; the same dict from a loaded run."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import gradscope
from gradscope.metrics import NAMES, VERDICT_CODES, metric_key, metrics

T, H, B = 40, 8, 3


def orthogonal(size, generator):
    q, _ = torch.linalg.qr(torch.randn(size, size, generator=generator))
    return q


def set_scale(rnn, s, generator):
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(s * orthogonal(H, generator))
        rnn.bias_hh_l0.zero_()
        rnn.bias_ih_l0.zero_()


def linear_steps(scales, run_dir=None):
    """One recorded step per scale, the root module a tanh RNN in its linear regime."""
    generator = torch.Generator().manual_seed(0)
    rnn = nn.RNN(H, H, batch_first=True)
    scope = gradscope.watch(rnn, run_dir=run_dir)
    with scope:
        for s in scales:
            set_scale(rnn, s, generator)
            out, _ = rnn(1e-3 * torch.randn(B, T, H, generator=generator))
            out[:, -1].sum().backward()
    return scope


def test_keys_are_stable_and_values_are_the_chosen_steps_numbers():
    scope = linear_steps([0.5, 0.9])
    latest, first = scope.metrics(), scope.metrics(step=0)
    names = {metric_key("", 0, "forward", name) for name in NAMES}
    assert set(latest) == set(first) == names
    assert metric_key("", 0, "forward", "gain") == "gradscope/_root/l0/forward/gain"
    assert all(isinstance(v, float) for v in latest.values())

    key = lambda name: metric_key("", 0, "forward", name)
    assert first[key("gain")] == pytest.approx(0.5, rel=0.02)
    assert latest[key("gain")] == pytest.approx(0.9, rel=0.02)
    assert first[key("sigma_max")] == pytest.approx(0.5, rel=1e-6)
    assert latest[key("sigma_max")] == pytest.approx(0.9, rel=1e-6)
    rows = scope.timesteps()
    assert latest[key("max_grad_norm")] == pytest.approx(rows[rows.step == 1].grad_norm.max(), rel=1e-12)
    assert latest[key("nonfinite")] == 0.0
    per_step = gradscope.analyze(scope).per_step().set_index("step")["verdict"]
    assert first[key("verdict")] == VERDICT_CODES[per_step[0]]
    assert latest[key("verdict")] == VERDICT_CODES[per_step[1]]
    assert VERDICT_CODES == {"healthy": 0.0, "unknown": 1.0, "vanishing": 2.0, "exploding": 3.0,
                             "nonfinite": 4.0}


class TwoParts(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.GRU(3, 5, num_layers=2, bidirectional=True, batch_first=True)
        self.spare = nn.LSTMCell(3, 4)  # never called: its keys exist, with NaN

    def forward(self, x):
        return self.encoder(x)[0].sum()


def test_nan_not_missing_before_any_step_and_for_parts_a_step_did_not_reach():
    model = TwoParts()
    scope = gradscope.watch(model)
    empty = scope.metrics()
    assert len(empty) == (2 * 2 + 1) * len(NAMES)
    assert all(math.isnan(v) for v in empty.values())
    with scope:
        model(torch.randn(2, 6, 3)).backward()
    filled = scope.metrics()
    assert set(filled) == set(empty)
    assert all(math.isnan(filled[metric_key("spare", 0, "forward", n)]) for n in NAMES)
    for layer in (0, 1):
        for direction in ("forward", "reverse"):
            assert math.isfinite(filled[metric_key("encoder", layer, direction, "gain")])


def test_a_loaded_run_gives_the_same_metrics(tmp_path):
    scope = linear_steps([0.6, 0.8, 0.95], run_dir=tmp_path / "run")
    run = gradscope.load(tmp_path / "run")
    for step in (None, 0, 1, 2):
        live, loaded, by_path = scope.metrics(step), metrics(run, step), metrics(tmp_path / "run", step)
        assert same_numbers(live, loaded) and same_numbers(live, by_path)
    # spectra_every="auto": step 1 has none (NaN spectral metrics), the last step got them at stop()
    assert math.isnan(scope.metrics(1)[metric_key("", 0, "forward", "sigma_max")])
    assert math.isfinite(scope.metrics(2)[metric_key("", 0, "forward", "sigma_max")])


def same_numbers(a, b):
    """Equal keys and values, NaN equal to NaN."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_a_step_that_was_not_recorded_is_a_clear_error():
    scope = linear_steps([0.5])
    with pytest.raises(ValueError, match=r"step 3 was not recorded; the recorded steps are \[0\]"):
        scope.metrics(step=3)


def test_gradscope_and_its_integration_modules_import_without_the_extras_packages():
    code = ("import sys\n"
            "import gradscope, gradscope.scope, gradscope.metrics\n"
            "import gradscope.integrations.tensorboard, gradscope.integrations.lightning\n"
            "import gradscope.integrations.distributed\n"
            "print(sorted(m for m in ('lightning', 'tensorboard', 'pytorch_lightning') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(Path(__file__).resolve().parent.parent))  # this checkout's gradscope
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
