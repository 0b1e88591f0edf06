"""Where a NaN/Inf starts in the forward pass (issue 15 item 6): the exact route records which
sequences hold one in the input and in each layer's output per t, checked against the
unwatched module; analyze traces a nonfinite gradient to the input, a state or the loss side,
and does not advise clipping for a non-finite loss."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import gradscope

NAN, INF = float("nan"), float("inf")


def reference_rows(flags):
    """{t: sorted sequence indices} from a (T, B) bool array."""
    return {t: sorted(np.flatnonzero(row).tolist()) for t, row in enumerate(flags) if row.any()}


def recorded(table, place, layer):
    rows = table[(table["place"] == place) & (table["layer"] == layer)]
    out = {}
    for row in rows.itertuples():
        seqs = sorted(int(s) for s in row.sequences.split(","))
        assert len(seqs) == row.nonfinite  # fewer than MAX_LISTED here: all are listed
        out[int(row.t)] = seqs
    return out


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("cls", [nn.RNN, nn.GRU, nn.LSTM])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_rows_match_the_unwatched_forward(cls, bidirectional, batch_first, mode):
    torch.manual_seed(0)
    module = cls(3, 4, num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    x = torch.randn(6, 10, 3)  # (B, T, I)
    x[2, 3, 1], x[4, 7, 0] = NAN, NAN
    expected_out, _ = module(x if batch_first else x.transpose(0, 1))
    with gradscope.watch(module, mode=mode) as scope:
        out, _ = module(x if batch_first else x.transpose(0, 1))
        out.sum().backward()
    torch.testing.assert_close(out, expected_out, equal_nan=True)
    table = scope.forward_nonfinite()
    assert set(table["step"]) == {0} and set(table["module"]) == {""}
    assert recorded(table, "input", 0) == reference_rows(~torch.isfinite(x).all(-1).T.numpy())
    last = expected_out if not batch_first else expected_out.transpose(0, 1)  # (T, B, H)
    assert recorded(table, "output", 1) == reference_rows(~torch.isfinite(last).all(-1).numpy())


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("bad", [None, INF, NAN], ids=["all-finite", "inf", "nan"])
def test_huge_finite_input_whose_sum_overflows(mode, bad):
    """Finite entries near float32's largest make the quick whole-input sum overflow: the rows
    are then checked one by one, and only a real NaN/Inf is named."""
    torch.manual_seed(0)
    module = nn.RNN(3, 4)
    x = torch.full((5, 2, 3), 3e38)  # (T, B, I): every sum over two entries overflows
    if bad is not None:
        x[3, 1, 2] = bad
    with gradscope.watch(module, mode=mode) as scope:
        module(x)[0].sum().backward()
    want = {} if bad is None else {3: [1]}
    assert recorded(scope.forward_nonfinite(), "input", 0) == want


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_packed_input_names_the_sequences_in_the_users_order(mode):
    torch.manual_seed(0)
    module = nn.GRU(2, 3)
    x = torch.randn(5, 3, 2)  # (T, B, I), lengths not sorted
    x[1, 2, 0] = NAN          # sequence 2, t=1
    packed = pack_padded_sequence(x, torch.tensor([3, 2, 5]), enforce_sorted=False)
    with gradscope.watch(module, mode=mode) as scope:
        out, h = module(packed)
        h.sum().backward()
    table = scope.forward_nonfinite()
    assert recorded(table, "input", 0) == {1: [2]}
    assert recorded(table, "output", 0) == {t: [2] for t in range(1, 5)}


def test_a_finite_forward_records_no_rows_and_survives_the_run_folder(tmp_path):
    module = nn.LSTM(2, 3)
    x = torch.randn(4, 2, 2)
    with gradscope.watch(module, run_dir=tmp_path / "run") as scope:
        module(x)[0].sum().backward()
        y = x.clone()
        y[2, 1, 0] = INF
        module(y)[0].sum().backward()
    table = scope.forward_nonfinite()
    assert set(table["step"]) == {1}
    loaded = gradscope.load(tmp_path / "run").forward_nonfinite()
    assert loaded.equals(table)


def nonfinite_finding(diagnosis):
    found = diagnosis.by_kind("nonfinite")
    assert found, str(diagnosis)
    return found[0]


def test_nan_in_the_input_is_traced_to_the_input_and_not_clipped():
    # the case of the issue: NaN in the input at t=3 of a 10-step sequence
    torch.manual_seed(0)
    model = nn.LSTM(3, 4, batch_first=True)
    x = torch.randn(5, 10, 3)
    x[2, 3, 1] = NAN
    with gradscope.watch(model) as scope:
        out, _ = model(x)
        out.pow(2).mean().backward()
    finding = nonfinite_finding(gradscope.analyze(scope))
    assert finding.evidence["origin"] == "input"
    assert finding.evidence["forward_first_t"] == 3 and finding.evidence["forward_sequences"] == "2"
    assert "input" in finding.message and "t=3" in finding.message
    assert "clip_grad_norm_" not in finding.advice and "isfinite(x)" in finding.advice


def test_an_overflowing_state_is_traced_to_the_recurrence():
    torch.manual_seed(0)
    model = nn.RNN(2, 4, nonlinearity="relu")
    with torch.no_grad():
        model.weight_hh_l0.copy_(torch.eye(4) * 1e30)
        model.bias_hh_l0.fill_(1.0)
    with gradscope.watch(model) as scope:
        out, _ = model(torch.randn(6, 2, 2))
        out.sum().backward()
    finding = nonfinite_finding(gradscope.analyze(scope))
    assert finding.evidence["origin"] == "state"
    assert "overflows" in finding.message and "isfinite(p)" in finding.advice


def test_a_nan_loss_after_a_finite_forward_points_at_the_loss():
    torch.manual_seed(0)
    model = nn.GRU(2, 3)
    target = torch.randn(5, 2, 3)
    target[4, 1, 0] = NAN  # a padded target left as NaN
    with gradscope.watch(model) as scope:
        out, _ = model(torch.randn(5, 2, 2))
        (out - target).pow(2).sum().backward()
    finding = nonfinite_finding(gradscope.analyze(scope))
    assert finding.evidence["origin"] == "after the module"
    assert "loss" in finding.message and "clip_grad_norm_" not in finding.advice
