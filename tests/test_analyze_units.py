"""gradscope.analyze on synthetic tables: every number is known in closed form.

A small fake source offers the tables a Scope or Run offers; the rows follow the linear
recursion total_t = carried_t + direct_t, carried_t = s * total_{t+1}, so the gain is s by
construction and the horizon log(1e-3)/log(s).
"""

import json
import math

import numpy as np
import pandas as pd
import pytest

from gradscope.analysis import Diagnosis, Finding, Rules, analyze
from gradscope.analysis.gain import horizon
from gradscope.records import TableSource, frame, select_rows


class FakeSource(TableSource):
    def __init__(self, timesteps, spectra=None, gates=None, meta=None, name="fake"):
        self._tables = {"timesteps": timesteps, "spectra": spectra, "gates": gates}
        self.meta = meta or {"schema": 1, "name": name, "modules": {}}
        self.name = name

    def table(self, table, steps=None, columns=None):
        return select_rows(frame(table, self._tables.get(table)), table, steps, columns)

    def steps(self):
        return sorted(int(s) for s in self.timesteps()["step"].unique())


def chain(gain, T=60, *, module="rnn", cell="RNN_TANH", step=0, call=0, layer=0,
          direction="forward", loss_every_step=False, state="h", batch=8, scale=1.0):
    """Rows of one sequence whose gradient is carried back with factor ``gain`` per step."""
    order = range(T - 1, -1, -1) if direction == "forward" else range(T)
    rows, total_next = [], None
    for t in order:
        carried = 0.0 if total_next is None else gain * total_next
        direct = scale if (total_next is None or loss_every_step) else 0.0
        total = carried + direct
        rows.append(dict(step=step, module=module, cell=cell, call=call, layer=layer,
                         direction=direction, state=state, t=t, batch=batch,
                         grad_norm=total, carried_norm=carried, direct_norm=direct,
                         nonfinite=0))
        total_next = total
    return rows


def spectrum_row(sigma, *, module="rnn", gate="hh", step=0, layer=0, direction="forward"):
    return dict(step=step, module=module, layer=layer, direction=direction, gate=gate,
                rows=4, cols=4, sigma_max=sigma, sigma_min=sigma / 2, spectral_radius=sigma,
                stable_rank=1.0, frobenius=2 * sigma)


def gate_row(gate, activation, low, high, *, module="lstm", step=0, count=1000, mean=0.5):
    return dict(step=step, module=module, call=0, layer=0, direction="forward", gate=gate,
                activation=activation, count=count, mean=mean, low=low, high=high)


def only(diagnosis, kind):
    found = diagnosis.by_kind(kind)
    assert len(found) == 1, [str(f) for f in diagnosis.findings]
    return found[0]


# --- gain and horizon -------------------------------------------------------------------

@pytest.mark.parametrize("gain", [0.5, 0.8, 0.95, 1.0, 1.2])
@pytest.mark.parametrize("loss_every_step", [False, True])
def test_gain_is_the_carried_factor_whatever_the_loss_placement(gain, loss_every_step):
    d = analyze(FakeSource(chain(gain, loss_every_step=loss_every_step)))
    row = d.summary().iloc[0]
    assert row["gain"] == pytest.approx(gain, rel=1e-12)
    assert row["pairs"] == 59
    assert row["method"] == "ratio"


def test_horizon_formula_and_limits():
    assert horizon(0.5, 1e-3) == pytest.approx(math.log(1e-3) / math.log(0.5))
    assert horizon(1.0, 1e-3) == math.inf
    assert horizon(1.3, 1e-3) == math.inf
    assert horizon(0.0, 1e-3) == 0.0
    assert math.isnan(horizon(math.nan, 1e-3))


def test_horizon_is_marked_extrapolated_past_the_sequence():
    short = analyze(FakeSource(chain(0.95, T=20))).summary().iloc[0]
    assert short["horizon"] == pytest.approx(math.log(1e-3) / math.log(0.95))
    assert bool(short["horizon_extrapolated"]) is True
    inside = analyze(FakeSource(chain(0.5, T=20))).summary().iloc[0]
    assert bool(inside["horizon_extrapolated"]) is False


def test_reverse_direction_carries_from_t_minus_1():
    d = analyze(FakeSource(chain(0.7, direction="reverse")))
    row = d.summary().iloc[0]
    assert row["direction"] == "reverse"
    assert row["gain"] == pytest.approx(0.7, rel=1e-12)


def test_lstm_gain_uses_joint_h_and_c_norms():
    h = chain(0.5, cell="LSTM", state="h", module="lstm", scale=1.0)
    c = chain(0.9, cell="LSTM", state="c", module="lstm", scale=3.0)
    d = analyze(FakeSource(h + c))
    table = pd.DataFrame(h + c)
    joint = table.groupby("t")[["grad_norm", "carried_norm"]].apply(
        lambda g: np.sqrt((g ** 2).sum()))
    expected = np.exp(np.mean(np.log(
        joint["carried_norm"].to_numpy()[:-1] / joint["grad_norm"].to_numpy()[1:])))
    assert d.summary().iloc[0]["gain"] == pytest.approx(expected, rel=1e-12)
    # the joint gain lies between the two states' own gains
    assert 0.5 < expected < 0.9


def test_packed_batch_ratio_counts_only_sequences_that_continue():
    # two sequences of lengths 10 and 5, each carried with factor 0.8, loss at its last step
    gain, lengths = 0.8, (10, 5)
    per_seq = {}
    for i, length in enumerate(lengths):
        total = 0.0
        for t in range(length - 1, -1, -1):
            carried = gain * total if t < length - 1 else 0.0
            total = carried + (1.0 if t == length - 1 else 0.0)
            per_seq[(i, t)] = (total, carried)
    rows = []
    for t in range(max(lengths)):
        active = [per_seq[(i, t)] for i in range(2) if (i, t) in per_seq]
        rows.append(dict(step=0, module="rnn", cell="RNN_TANH", call=0, layer=0,
                         direction="forward", state="h", t=t, batch=len(active),
                         grad_norm=np.mean([a[0] for a in active]),
                         carried_norm=np.mean([a[1] for a in active]),
                         direct_norm=0.0, nonfinite=0))
    assert analyze(FakeSource(rows)).summary().iloc[0]["gain"] == pytest.approx(gain)


def test_calls_and_steps_are_pooled_and_pairs_stay_within_a_call():
    rows = chain(0.9, call=0, T=30) + chain(0.9, call=1, T=30) + chain(0.9, step=1, T=30)
    row = analyze(FakeSource(rows)).summary().iloc[0]
    assert row["gain"] == pytest.approx(0.9) and row["gain_pooled"] == pytest.approx(0.9)
    assert row["pairs_pooled"] == 3 * 29
    assert row["pairs"] == 29            # the latest step's, whose verdict the summary gives
    assert row["verdict_step"] == 1
    assert row["steps"] == 2


def test_zero_carried_gradient_is_vanishing_without_error():
    row = analyze(FakeSource(chain(0.0, T=10))).summary().iloc[0]
    assert row["gain"] < 1e-20
    assert row["horizon"] < 1
    assert row["verdict"] == "vanishing"


def test_rows_without_carried_part_are_unknown_never_healthy():
    # a loss at every step made the old fit of log(total) read 1.0 (healthy) for a gain of 0.05
    rows = chain(0.05, module="decoder", cell="track", loss_every_step=True)
    for r in rows:
        r["carried_norm"] = r["direct_norm"] = math.nan
    d = analyze(FakeSource(rows))
    row = d.summary().iloc[0]
    assert row["method"] == "unmeasured" and math.isnan(row["gain"])
    assert row["verdict"] == "unknown" and list(d.per_step()["verdict"]) == ["unknown"]
    assert d.ok and "unknown" in str(d)
    assert "carried part" in only(d, "no_data").message


def test_track_rows_with_carried_part_are_measured_like_a_module():
    rows = chain(0.8, module="decoder", cell="track", loss_every_step=True)
    d = analyze(FakeSource(rows))
    row = d.summary().iloc[0]
    assert row["method"] == "ratio" and row["gain"] == pytest.approx(0.8)
    assert row["verdict"] == "vanishing"


def test_weights_entry_of_the_track_label_gives_the_spectral_bound():
    rows = chain(0.05, module="decoder", cell="track", loss_every_step=True)
    spectra = [spectrum_row(0.1, module="decoder", gate="decoder"),
               spectrum_row(0.5, module="other", gate="other")]
    d = analyze(FakeSource(rows, spectra=spectra))
    assert d.summary().iloc[0]["sigma_max"] == pytest.approx(0.1)
    found = only(d, "spectral_bound")
    assert found.module == "decoder" and found.evidence["sigma_max"] == pytest.approx(0.1)
    assert "weights=" in found.advice and "model.decoder" not in found.advice


def test_a_nan_in_one_lstm_state_poisons_the_joint_value():
    h = chain(0.9, cell="LSTM", state="h", module="lstm")
    c = chain(0.9, cell="LSTM", state="c", module="lstm")
    for r in c:
        if r["t"] == 30:
            # a NaN norm without a nonfinite count: only the poisoned joint value drops
            # the two pairs that touch t=30 (h alone would still look finite there)
            r.update(grad_norm=math.nan, carried_norm=math.nan)
    row = analyze(FakeSource(h + c)).summary().iloc[0]
    assert row["pairs"] == 59 - 2
    assert row["gain"] == pytest.approx(0.9)


# --- verdicts and Rules -------------------------------------------------------------------

@pytest.mark.parametrize("gain,verdict", [(0.5, "vanishing"), (0.8, "vanishing"),
                                          (0.95, "healthy"), (1.0, "healthy"),
                                          (1.2, "exploding")])
def test_default_verdicts_at_sixty_steps(gain, verdict):
    d = analyze(FakeSource(chain(gain, T=60)))
    assert d.summary().iloc[0]["verdict"] == verdict
    assert d.ok == (verdict == "healthy")


def test_min_horizon_overrides_the_observed_length():
    assert analyze(FakeSource(chain(0.95)), Rules(min_horizon=200)).summary().iloc[0][
        "verdict"] == "vanishing"
    assert analyze(FakeSource(chain(0.8)), {"min_horizon": 20}).summary().iloc[0][
        "verdict"] == "healthy"


def test_min_gain_catches_short_sequences():
    d = analyze(FakeSource(chain(0.2, T=4)))
    assert d.summary().iloc[0]["verdict"] == "vanishing"
    assert "min_gain" in only(d, "vanishing").message
    assert analyze(FakeSource(chain(0.3, T=4))).summary().iloc[0]["verdict"] == "healthy"


def test_exploding_by_compounded_growth_and_by_norm_bound():
    slow = analyze(FakeSource(chain(1.02)), Rules(min_horizon=1000))
    assert only(slow, "exploding").evidence["growth_over_required_horizon"] > 1e8
    big = analyze(FakeSource(chain(1.0, scale=1e7)))
    f = only(big, "exploding")
    assert "max_grad_norm" in f.message and not big.ok


def test_exploding_advice_names_clip_threshold_from_direct_norms():
    d = analyze(FakeSource(chain(1.2, scale=2.5, loss_every_step=True)))
    f = only(d, "exploding")
    assert f.severity == "error"
    assert "clip_grad_norm_(model.parameters(), max_norm=2.5)" in f.advice
    expected_window = int(math.log(1e3) / math.log(1.2))
    assert f"window of about {expected_window} steps" in f.advice


def test_rules_from_mapping_reads_names_and_rejects_unknown_ones():
    rules = Rules.from_mapping({"min-horizon": "100", "horizon_ratio": 1e-4})
    assert rules.min_horizon == 100.0 and rules.horizon_ratio == 1e-4
    assert Rules.from_mapping(Rules().to_dict()) == Rules()
    with pytest.raises(ValueError, match="horizon_ration.*known rules:.*horizon_ratio"):
        Rules.from_mapping({"horizon_ration": 1e-3})
    with pytest.raises(ValueError, match="must be a number"):
        Rules.from_mapping({"min_gain": "low"})
    with pytest.raises(ValueError, match="horizon_ratio"):
        Rules(horizon_ratio=2.0)


def test_rules_of_the_wrong_type_and_sources_without_tables_are_type_errors():
    with pytest.raises(TypeError, match="rules"):
        analyze(FakeSource(chain(0.9)), rules=0.5)
    with pytest.raises(TypeError, match="timesteps"):
        analyze(object())


def test_a_path_is_loaded_with_gradscope_store(monkeypatch, tmp_path):
    loaded = []
    monkeypatch.setattr("gradscope.store.sources.load", lambda path: loaded.append(path) or FakeSource(chain(0.9)))
    d = analyze(str(tmp_path))
    assert loaded == [str(tmp_path)]
    assert d.summary().iloc[0]["gain"] == pytest.approx(0.9)


# --- nonfinite --------------------------------------------------------------------------

def test_nonfinite_rows_are_counted_located_and_skipped_in_the_gain():
    rows = chain(0.9, T=30)
    for r in rows:
        if r["t"] <= 12:  # NaN entered the backward pass at t=12 and was carried to t<12
            r.update(grad_norm=math.nan, carried_norm=math.nan, nonfinite=3)
    d = analyze(FakeSource(rows + chain(0.9, T=30, step=1)))
    row = d.summary().iloc[0]
    assert row["verdict"] == "nonfinite" and row["nonfinite"] == 13 * 3
    assert row["gain"] == pytest.approx(0.9)   # the finite pairs still measure it
    f = only(d, "nonfinite")
    assert (f.evidence["first_step"], f.evidence["first_t"]) == (0, 12)
    assert f.evidence["steps_with_nonfinite"] == 1
    assert "set_detect_anomaly" in f.advice
    assert not d.ok
    json.dumps(d.to_dict(), allow_nan=False)


def test_nonfinite_origin_in_reverse_direction_is_the_earliest_t():
    rows = chain(0.9, T=20, direction="reverse")
    for r in rows:
        if r["t"] >= 7:
            r.update(grad_norm=math.inf, nonfinite=1)
    f = only(analyze(FakeSource(rows)), "nonfinite")
    assert f.evidence["first_t"] == 7


# --- saturation and spectral bound ----------------------------------------------------

def test_lstm_forget_gate_near_zero_advises_forget_bias_one():
    ts = chain(0.5, module="lstm", cell="LSTM")
    meta = {"modules": {"lstm": {"cell": "LSTM", "kind": "module", "layers": 1,
                                 "directions": ["forward"], "hidden_size": 16}}}
    gates = [gate_row("f", "sigmoid", 0.8, 0.0), gate_row("i", "sigmoid", 0.1, 0.1)]
    d = analyze(FakeSource(ts, gates=gates, meta=meta))
    f = only(d, "saturation")
    assert f.severity == "warning" and f.evidence["gate"] == "f"
    assert f.evidence["share"] == pytest.approx(0.8)
    assert "bias_ih_l0[16:32].fill_(1.0)" in f.advice
    assert "bias_ih_l0[16:32].fill_(1.0)" in only(d, "vanishing").advice


def test_saturation_uses_the_latest_step_and_reports_the_first():
    ts = chain(1.0, module="rnn") + chain(1.0, module="rnn", step=5)
    gates = [gate_row("hh", "tanh", 0.05, 0.05, module="rnn", step=0),
             gate_row("hh", "tanh", 0.3, 0.4, module="rnn", step=5)]
    f = only(analyze(FakeSource(ts, gates=gates)), "saturation")
    assert f.evidence["share"] == pytest.approx(0.7)
    assert f.evidence["share_at_first_step"] == pytest.approx(0.1)
    assert "orthogonal_" in f.advice
    calm = [gate_row("hh", "tanh", 0.2, 0.2, module="rnn")]
    assert analyze(FakeSource(chain(1.0), gates=calm)).by_kind("saturation") == []


def test_forget_gate_near_one_is_information_not_a_warning():
    gates = [gate_row("f", "sigmoid", 0.0, 0.9)]
    f = only(analyze(FakeSource(chain(1.0, module="lstm", cell="LSTM"), gates=gates)),
             "saturation")
    assert f.severity == "info"


def test_dead_relu_units_are_reported():
    gates = [gate_row("hh", "relu", 0.7, math.nan, module="rnn")]
    f = only(analyze(FakeSource(chain(1.0, cell="RNN_RELU"), gates=gates)), "saturation")
    assert "dead" in f.message and "nonlinearity='tanh'" in f.advice


def test_spectral_bound_for_tanh_rnn_with_sigma_below_one():
    spectra = [spectrum_row(1.5, step=0), spectrum_row(0.8, step=3),
               spectrum_row(0.2, step=3, gate="other")]
    d = analyze(FakeSource(chain(0.8), spectra=spectra))
    assert d.summary().iloc[0]["sigma_max"] == 0.8    # latest step, gate hh
    f = only(d, "spectral_bound")
    assert f.severity == "warning" and "Pascanu" in f.message and "any input" in f.message
    assert f.evidence["horizon_bound"] == pytest.approx(math.log(1e-3) / math.log(0.8))


def test_no_spectral_bound_at_sigma_one_or_for_gated_cells():
    assert analyze(FakeSource(chain(1.0), spectra=[spectrum_row(1.0)])).by_kind(
        "spectral_bound") == []
    gated = analyze(FakeSource(chain(0.95, module="lstm", cell="LSTM"),
                               spectra=[spectrum_row(0.5, module="lstm", gate="all")]))
    assert gated.by_kind("spectral_bound") == []
    assert gated.summary().iloc[0]["sigma_max"] == 0.5


def test_nearly_one_sigma_gives_information_only():
    f = only(analyze(FakeSource(chain(1.0), spectra=[spectrum_row(0.9999999)])),
             "spectral_bound")
    assert f.severity == "info"


# --- over training, output forms -----------------------------------------------------------

def test_run_that_started_healthy_and_degraded():
    rows = chain(1.0, step=0) + sum((chain(0.7, step=s) for s in (1, 2, 3)), [])
    d = analyze(FakeSource(rows))
    per_step = d.per_step()
    assert list(per_step["step"]) == [0, 1, 2, 3]
    assert list(per_step["verdict"]) == ["healthy"] + ["vanishing"] * 3
    assert per_step["gain"].tolist() == pytest.approx([1.0, 0.7, 0.7, 0.7])
    f = only(d, "vanishing")
    assert f.evidence["degraded"] is True and f.evidence["first_step_with_verdict"] == 1
    assert "started healthy" in f.evidence["trend"]


def test_latest_step_decides_even_when_the_pooled_gain_is_healthy():
    rows = sum((chain(1.0, step=s) for s in range(9)), []) + chain(0.5, step=9)
    row = analyze(FakeSource(rows)).summary().iloc[0]
    assert row["first_verdict"] == "healthy" and row["last_verdict"] == "vanishing"
    assert row["verdict"] == "vanishing"


def test_to_dict_is_plain_json_and_str_is_a_terminal_report():
    d = analyze(FakeSource(chain(1.0) + chain(0.5, module="other"),
                           spectra=[spectrum_row(0.5, module="other")]))
    data = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    by_module = {row["module"]: row for row in data["summary"]}
    assert by_module["rnn"]["horizon"] == "inf"
    assert by_module["rnn"]["sigma_max"] is None
    assert data["ok"] is False and data["rules"]["horizon_ratio"] == 1e-3
    assert {f["kind"] for f in data["findings"]} == {"vanishing", "spectral_bound"}
    text = str(d)
    assert "NOT OK" in text and "vanishing" in text and "advice:" in text
    assert d.findings[0].severity == "error"   # most severe first


def test_summary_has_the_contract_columns():
    summary = analyze(FakeSource(chain(0.9))).summary()
    for column in ("module", "layer", "direction", "gain", "horizon", "max_grad_norm",
                   "nonfinite", "sigma_max", "verdict", "cell"):
        assert column in summary.columns
    assert len(summary) == 1


def test_nothing_recorded_is_an_error_not_a_crash():
    d = analyze(FakeSource(None))
    assert not d.ok and d.summary().empty and only(d, "no_steps").severity == "error"
    json.dumps(d.to_dict(), allow_nan=False)


def test_single_time_step_gives_unknown_verdict():
    d = analyze(FakeSource(chain(0.9, T=1)))
    assert d.summary().iloc[0]["verdict"] == "unknown"
    assert only(d, "no_data").severity == "info" and d.ok


def test_finding_rejects_unknown_severity():
    with pytest.raises(ValueError, match="severity"):
        Finding("vanishing", "fatal", "", 0, "forward", "msg")
    assert isinstance(analyze(FakeSource(chain(0.9))), Diagnosis)


def test_vanishing_lstm_with_open_forget_gates_gets_a_larger_bias_advice():
    ts = chain(0.85, module="lstm", cell="LSTM")   # horizon 42 < 60
    meta = {"modules": {"lstm": {"kind": "module", "hidden_size": 16}}}
    gates = [gate_row("f", "sigmoid", 0.0, 0.1, mean=0.85)]
    f = only(analyze(FakeSource(ts, gates=gates, meta=meta)), "vanishing")
    assert f.evidence["forget_gate_mean"] == pytest.approx(0.85)
    assert f"fill_({math.log(60):.2g})" in f.advice and "fill_(1.0)" not in f.advice
