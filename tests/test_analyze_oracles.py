"""gradscope.analyze on real models under gradscope.watch, against answers known from theory.

- A tanh RNN in its linear regime (tiny inputs, zero bias, W_hh = s*Q with Q orthogonal) has
  dh_{t+1}/dh_t = diag(1 - h^2) W_hh ~ s*Q: every step back scales the gradient by exactly s,
  wherever the loss enters.
- A relu RNN with W_hh = 1.2*I, W_ih = 0 and a positive bias has all units active: the
  Jacobian is 1.2*I, the gain exactly 1.2.
- An LSTM's cell path carries diag(f): forget bias +5 (f ~ 0.993) keeps the gradient, -5
  (f ~ 0.007) kills it.
"""

import json
import math
import warnings

import pytest
import torch

import gradscope
from gradscope.analysis import analyze

T, H, B = 60, 16, 4


def orthogonal(size, generator):
    q, _ = torch.linalg.qr(torch.randn(size, size, generator=generator))
    return q


def linear_tanh_rnn(s, *, bidirectional=False, seed=0):
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.RNN(H, H, batch_first=True, bidirectional=bidirectional)
    with torch.no_grad():
        for suffix in ("_l0", "_l0_reverse") if bidirectional else ("_l0",):
            getattr(model, "weight_hh" + suffix).copy_(s * orthogonal(H, generator))
            getattr(model, "bias_hh" + suffix).zero_()
            getattr(model, "bias_ih" + suffix).zero_()
    return model, generator


def run_linear(s, loss_at, *, bidirectional=False):
    model, generator = linear_tanh_rnn(s, bidirectional=bidirectional)
    x = 1e-3 * torch.randn(B, T, H, generator=generator)
    weights = torch.randn(B, T, H * (2 if bidirectional else 1), generator=generator)
    with gradscope.watch(model) as scope:
        out, _ = model(x)
        if loss_at == "last":
            loss = (out[:, -1] * weights[:, -1]).sum()
        else:
            loss = (out * weights).sum()
        loss.backward()
    return scope


@pytest.mark.parametrize("loss_at", ["last", "every"])
@pytest.mark.parametrize("s", [0.5, 0.8, 0.95, 1.0])
def test_linear_tanh_rnn_gain_is_the_weight_scale(s, loss_at):
    diagnosis = analyze(run_linear(s, loss_at))
    row = diagnosis.summary().iloc[0]
    assert row["gain"] == pytest.approx(s, rel=0.02)
    assert row["seq_len"] == T
    if s <= 0.8:
        assert row["verdict"] == "vanishing" and not diagnosis.ok
        assert diagnosis.by_kind("vanishing")[0].severity == "error"
    else:
        # s=0.95: horizon log(1e-3)/log(0.95) = 135 > 60 steps, healthy under the defaults
        assert row["verdict"] == "healthy" and diagnosis.ok


def test_linear_tanh_rnn_horizon_follows_from_the_gain():
    row = analyze(run_linear(0.8, "last")).summary().iloc[0]
    assert row["horizon"] == pytest.approx(math.log(1e-3) / math.log(0.8), rel=0.02)
    assert analyze(run_linear(1.0, "last")).summary().iloc[0]["horizon"] > 1e4


def test_bidirectional_reverse_direction_has_the_same_gain():
    summary = analyze(run_linear(0.8, "every", bidirectional=True)).summary()
    assert sorted(summary["direction"]) == ["forward", "reverse"]
    for gain in summary["gain"]:
        assert gain == pytest.approx(0.8, rel=0.02)


def test_spectral_bound_names_pascanu_for_a_contracting_tanh_rnn():
    scope = run_linear(0.8, "last")
    if scope.spectra().empty:
        pytest.skip("gradscope.watch records no weight spectra yet")
    diagnosis = analyze(scope)
    assert diagnosis.summary().iloc[0]["sigma_max"] == pytest.approx(0.8, rel=1e-4)
    finding = diagnosis.by_kind("spectral_bound")[0]
    assert "Pascanu" in finding.message and "any input" in finding.message


def test_relu_rnn_with_growing_identity_explodes():
    generator = torch.Generator().manual_seed(1)
    model = torch.nn.RNN(8, 8, nonlinearity="relu", batch_first=True)
    with torch.no_grad():
        model.weight_hh_l0.copy_(1.2 * torch.eye(8))
        model.weight_ih_l0.zero_()
        model.bias_ih_l0.fill_(0.1)
        model.bias_hh_l0.zero_()
    with gradscope.watch(model) as scope:
        out, _ = model(torch.randn(B, 30, 8, generator=generator))
        out[:, -1].sum().backward()
    diagnosis = analyze(scope)
    row = diagnosis.summary().iloc[0]
    assert row["gain"] == pytest.approx(1.2, rel=1e-3)
    assert row["verdict"] == "exploding"
    assert diagnosis.ok is False
    finding = diagnosis.by_kind("exploding")[0]
    # the clip threshold is the injected gradient: d(sum of 8 outputs)/dh = ones(8)
    assert f"max_norm={float(f'{math.sqrt(8):.2g}'):g}" in finding.advice


def lstm_with_forget_bias(bias):
    generator = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    model = torch.nn.LSTM(4, 8, batch_first=True)
    with torch.no_grad():
        model.bias_ih_l0[8:16].fill_(bias)
        model.bias_hh_l0[8:16].zero_()
    with gradscope.watch(model) as scope:
        out, _ = model(torch.randn(B, 30, 4, generator=generator))
        out[:, -1].sum().backward()
    return analyze(scope)


def test_lstm_forget_bias_sets_the_horizon():
    keep, forget = lstm_with_forget_bias(5.0), lstm_with_forget_bias(-5.0)
    long_horizon = keep.summary().iloc[0]["horizon"]
    short_horizon = forget.summary().iloc[0]["horizon"]
    assert long_horizon > 10 * short_horizon
    assert forget.summary().iloc[0]["verdict"] == "vanishing"
    # forget gates near 0 are reported with the standard fix
    saturated = [f for f in forget.by_kind("saturation") if f.evidence["gate"] == "f"]
    assert saturated and saturated[0].evidence["end"] == "low"
    assert "[8:16].fill_(1.0)" in saturated[0].advice


def test_nan_in_the_loss_is_counted_located_and_does_not_raise():
    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = torch.nn.RNN(4, 8, batch_first=True)
    weights = torch.randn(B, 30, 8, generator=generator)
    weights[1, 17, 3] = float("nan")  # one position of one sequence
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with gradscope.watch(model) as scope:
            out, _ = model(torch.randn(B, 30, 4, generator=generator))
            (out * weights).sum().backward()
    diagnosis = analyze(scope)
    row = diagnosis.summary().iloc[0]
    # sequence 1 gets NaN at t=17 and carries it back to t=0..16: 18 sequence-steps
    assert row["nonfinite"] == 18 and row["verdict"] == "nonfinite"
    finding = diagnosis.by_kind("nonfinite")[0]
    assert (finding.evidence["first_step"], finding.evidence["first_t"]) == (0, 17)
    assert not diagnosis.ok
    json.dumps(diagnosis.to_dict(), allow_nan=False)


def test_run_that_degrades_over_training_says_so():
    model, generator = linear_tanh_rnn(1.0)
    q = model.weight_hh_l0.detach().clone()
    with gradscope.watch(model) as scope:
        for step, s in enumerate((1.0, 1.0, 0.6, 0.6)):
            with torch.no_grad():
                model.weight_hh_l0.copy_(s * q)
            out, _ = model(1e-3 * torch.randn(B, T, H, generator=generator))
            out[:, -1].sum().backward()
    diagnosis = analyze(scope)
    per_step = diagnosis.per_step()
    assert list(per_step["verdict"]) == ["healthy", "healthy", "vanishing", "vanishing"]
    assert per_step["gain"].tolist() == pytest.approx([1.0, 1.0, 0.6, 0.6], rel=0.02)
    finding = diagnosis.by_kind("vanishing")[0]
    assert finding.evidence["degraded"] is True
    assert finding.evidence["first_step_with_verdict"] == 2


def test_a_run_folder_gives_the_same_diagnosis_as_the_live_scope(tmp_path):
    generator = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    model = torch.nn.GRU(3, 4, batch_first=True)
    with gradscope.watch(model, run_dir=tmp_path / "run") as scope:
        for _ in range(2):
            out, _ = model(torch.randn(2, 10, 3, generator=generator))
            out.sum().backward()
    live, saved = analyze(scope), analyze(str(tmp_path / "run"))
    assert saved.summary().equals(live.summary())
    assert saved.to_dict()["findings"] == live.to_dict()["findings"]
