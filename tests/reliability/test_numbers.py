"""Reliability, family 17.2 (Numbers): NaN and Inf in inputs, weights and the loss, overflow under
float16 and bfloat16 autocast, float64 gradients of 1e-300 and 1e+300.

Every case is generated from a product of points. What each must show: nothing raises, the
model computes exactly what it computes unwatched, non-finite gradients are counted per row as
the autograd reference counts them and flagged where they first appear, and no number turns
into a wrong verdict.
"""

import copy
import itertools
import json
import math
import warnings

import numpy as np
import pandas.testing as pd_testing
import pytest
import torch

import gradscope
from tests.reliability.modules import tame_relu
from tests.reference import reference_loop, reference_module

INPUT, HIDDEN, STEPS, BATCH = 3, 4, 6, 3
MODULES = {"RNN_TANH": torch.nn.RNN, "RNN_RELU": torch.nn.RNN, "GRU": torch.nn.GRU, "LSTM": torch.nn.LSTM}
KINDS = tuple(MODULES)
LAYOUTS = {"plain": {}, "deep-bidirectional": {"num_layers": 2, "bidirectional": True}}
BAD_VALUES = {"nan": math.nan, "inf": math.inf}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread computes them as fast, and on a shared, loaded machine
    far faster than threads that wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(kind, layout, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    kwargs = dict(LAYOUTS[layout])
    if kind.startswith("RNN"):
        kwargs["nonlinearity"] = "relu" if kind == "RNN_RELU" else "tanh"
    module = MODULES[kind](INPUT, HIDDEN, **kwargs).to(dtype)
    return tame_relu(module) if kind == "RNN_RELU" else module


class Batch:
    """Inputs, initial states and loss weights of one step; the loss is the reference's:
    sum(sin(out) * g_out) + sum(h_n * g_h) (+ sum(c_n * g_c))."""

    def __init__(self, module, kind, dtype=torch.float32, seed=1):
        generator = torch.Generator().manual_seed(seed)
        n_dir = 2 if module.bidirectional else 1
        states = module.num_layers * n_dir
        self.kind = kind
        self.x = torch.randn(STEPS, BATCH, INPUT, generator=generator, dtype=dtype)
        self.g_out = torch.randn(STEPS, BATCH, n_dir * HIDDEN, generator=generator, dtype=dtype)
        self.g_h = torch.randn(states, BATCH, HIDDEN, generator=generator, dtype=dtype)
        self.g_c = torch.randn(states, BATCH, HIDDEN, generator=generator, dtype=dtype)

    def loss(self, module):
        out, hn = module(self.x)
        h_n, c_n = hn if self.kind == "LSTM" else (hn, None)
        loss = (torch.sin(out) * self.g_out).sum() + (h_n * self.g_h).sum()
        if c_n is not None:
            loss = loss + (c_n * self.g_c).sum()
        return out, loss

    def reference_nonfinite(self, module):
        """{(layer, direction, state, t): sequences whose reference dL/dstate_t is not finite}."""
        zeros = torch.zeros_like(self.g_h)
        per_sample = reference_module(module, self.kind, [self.x[:, b] for b in range(BATCH)], zeros, zeros,
                                      [self.g_out[:, b] for b in range(BATCH)], self.g_h, self.g_c)
        counts = {}
        for (b, layer, direction, state, t), (total, _, _) in per_sample.items():
            key = (layer, direction, state, t)
            counts[key] = counts.get(key, 0) + int(not torch.isfinite(total).all())
        return counts


def poison(module, batch, place, value, extent):
    """Put ``value`` into the inputs, the recurrent weight or the loss weights, at one place
    (one sequence, one time step) or everywhere."""
    if place == "input":
        target = batch.x
        index = (2, 1, 0) if extent == "one" else ...
    elif place == "loss":
        target = batch.g_out
        index = (3, 1) if extent == "one" else ...
    else:
        target = module.weight_hh_l0
        index = (0, 0) if extent == "one" else ...
    with torch.no_grad():
        target[index] = value


def unwatched_numbers(module, batch):
    """Output and parameter gradients of one plain forward and backward."""
    module.zero_grad()
    out, loss = batch.loss(module)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad()
    return out.detach(), grads


def watched_run(module, batch, steps=1, rules=None):
    module.zero_grad()
    with gradscope.watch(module) as scope:
        for _ in range(steps):
            out, loss = batch.loss(module)
            loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad()
    return scope, out.detach(), grads


def assert_same_numbers(got_out, got_grads, want_out, want_grads):
    """The watched model computed what the plain one did, NaN for NaN."""
    torch.testing.assert_close(got_out, want_out, equal_nan=True)
    for name, want in want_grads.items():
        torch.testing.assert_close(got_grads[name], want, equal_nan=True, msg=lambda m: f"{name}: {m}")


def assert_verdicts_follow_nonfinite(scope, table):
    """analyze never raises; a part is 'nonfinite' exactly when one of its rows counted a
    non-finite gradient, and the JSON stays strict JSON."""
    diagnosis = gradscope.analyze(scope)
    hit = table.groupby(["layer", "direction"])["nonfinite"].sum()
    summary = diagnosis.summary().set_index(["layer", "direction"])
    for key, count in hit.items():
        verdict = summary.loc[key, "verdict"]
        assert (verdict == "nonfinite") == (count > 0), (key, verdict, count)
    flagged = {(f.layer, f.direction) for f in diagnosis.by_kind("nonfinite")}
    assert flagged == {key for key, count in hit.items() if count > 0}
    assert not (flagged and diagnosis.ok)  # a non-finite gradient is an error
    json.dumps(diagnosis.to_dict(), allow_nan=False)
    return diagnosis


# float32 on both layouts; float64 models on the plain one
POISON_CASES = [case + (dtype,) for dtype in ("float32", "float64")
                for case in itertools.product(KINDS, LAYOUTS, ("input", "weight", "loss"), BAD_VALUES, ("one", "all"))
                if dtype == "float32" or case[1] == "plain"]


@pytest.mark.parametrize("kind,layout,place,value,extent,dtype", POISON_CASES,
                         ids=["-".join(case) for case in POISON_CASES])
def test_nonfinite_value_is_counted_as_the_reference_counts_it_and_never_raised(kind, layout, place, value, extent,
                                                                                dtype):
    module = build(kind, layout, dtype=getattr(torch, dtype))
    batch = Batch(module, kind, dtype=getattr(torch, dtype))
    poison(module, batch, place, BAD_VALUES[value], extent)
    want_out, want_grads = unwatched_numbers(module, batch)
    before = {k: v.clone() for k, v in module.state_dict().items()}

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a warning: a NaN is a measurement, not a failure
        scope, got_out, got_grads = watched_run(module, batch)

    assert_same_numbers(got_out, got_grads, want_out, want_grads)
    after = module.state_dict()
    for name, value_before in before.items():
        torch.testing.assert_close(after[name], value_before, equal_nan=True, rtol=0, atol=0)

    table = scope.timesteps()
    expected = batch.reference_nonfinite(module)
    got = {(r.layer, r.direction, r.state, r.t): r.nonfinite for r in table.itertuples()}
    assert got == expected
    if value == "nan":  # a NaN reaches some gradient wherever it is (an Inf may saturate a unit instead)
        assert table["nonfinite"].sum() > 0
    # rows with a non-finite gradient have a non-finite mean norm; the others stay finite
    bad = table["nonfinite"] > 0
    assert not np.isfinite(table.loc[bad, "grad_norm"]).any()
    assert np.isfinite(table.loc[~bad, ["grad_norm", "carried_norm", "direct_norm"]].to_numpy()).all()
    assert_verdicts_follow_nonfinite(scope, table)


# -- where a NaN first appears ---------------------------------------------------------------

FIRST_PLACE_CASES = list(itertools.product(("RNN_TANH", "GRU", "LSTM"), LAYOUTS, (0, 3, STEPS - 1), (0, 2)))


@pytest.mark.parametrize("kind,layout,position,bad_step", FIRST_PLACE_CASES,
                         ids=[f"{k}-{lay}-t{p}-step{s}" for k, lay, p, s in FIRST_PLACE_CASES])
def test_nan_in_the_loss_is_flagged_at_the_step_and_time_it_enters(kind, layout, position, bad_step):
    """A NaN loss weight at (step s, t=k) of one sequence: every recorded step before s is clean,
    and the top layer's finding names step s and t=k (the backward pass brings it in at k and
    carries it towards t=0 forward, towards t=T-1 in reverse)."""
    module = build(kind, layout)
    batch = Batch(module, kind)
    clean = batch.g_out.clone()
    with gradscope.watch(module) as scope:
        for step in range(3):
            batch.g_out = clean.clone()
            if step == bad_step:
                batch.g_out[position, 1] = math.nan
            _, loss = batch.loss(module)
            loss.backward()
    table = scope.timesteps()
    per_step = table.groupby("step")["nonfinite"].sum()
    assert (per_step.loc[:bad_step - 1] == 0).all()
    assert per_step.loc[bad_step] > 0
    top = module.num_layers - 1
    diagnosis = gradscope.analyze(scope)
    findings = {(f.layer, f.direction): f for f in diagnosis.by_kind("nonfinite")}
    for direction in (("forward", "reverse") if module.bidirectional else ("forward",)):
        evidence = findings[(top, direction)].evidence
        assert (evidence["first_step"], evidence["first_t"]) == (bad_step, position), direction
        rows = table[(table["layer"] == top) & (table["direction"] == direction) & (table["step"] == bad_step)
                     & (table["state"] == "h")].set_index("t")["nonfinite"]
        reached = range(0, position + 1) if direction == "forward" else range(position, STEPS)
        assert (rows.loc[list(reached)] == 1).all() and rows.drop(list(reached)).eq(0).all()
    json.dumps(diagnosis.to_dict(), allow_nan=False)


# -- float64 gradients near the ends of the range ---------------------------------------------

# powers of two: scaling the loss by them scales every gradient exactly (no rounding), so the
# scaled run's norms must be the plain run's times the scale
SCALES = {"1e-300": 2.0 ** -997, "1e-200": 2.0 ** -664, "1e+200": 2.0 ** 664, "1e+300": 2.0 ** 997}
SCALE_CASES = list(itertools.product(KINDS, LAYOUTS, SCALES))
NEUTRAL = gradscope.Rules(norm_floor=0.0, max_grad_norm=math.inf)  # only the gain decides


def float64_run(kind, layout, scale):
    module = build(kind, layout, dtype=torch.float64)
    batch = Batch(module, kind, dtype=torch.float64)
    for name in ("g_out", "g_h", "g_c"):
        setattr(batch, name, getattr(batch, name) * scale)
    with gradscope.watch(module) as scope:
        _, loss = batch.loss(module)
        loss.backward()
    return scope


@pytest.mark.parametrize("kind,layout,scale", SCALE_CASES, ids=["-".join(case) for case in SCALE_CASES])
def test_float64_gradient_of_extreme_size_keeps_its_norm_and_verdict(kind, layout, scale):
    plain, scaled = float64_run(kind, layout, 1.0), float64_run(kind, layout, SCALES[scale])
    norms = ["grad_norm", "carried_norm", "direct_norm"]
    want, got = plain.timesteps(), scaled.timesteps()
    assert (got["nonfinite"] == 0).all()
    np.testing.assert_allclose(got[norms].to_numpy(), want[norms].to_numpy() * SCALES[scale], rtol=1e-12, atol=0)
    # the gain is scale-free: with the size thresholds out of the way the verdict is the same
    plain_summary = gradscope.analyze(plain, NEUTRAL).summary()
    scaled_summary = gradscope.analyze(scaled, NEUTRAL).summary()
    np.testing.assert_allclose(scaled_summary["gain"], plain_summary["gain"], rtol=1e-9)
    assert list(scaled_summary["verdict"]) == list(plain_summary["verdict"])
    # with the default rules a huge gradient is exploding by max_grad_norm, a tiny one at worst
    # unmeasured (below Rules.norm_floor); never a NaN verdict
    default = gradscope.analyze(scaled).summary()
    expected = {"exploding"} if SCALES[scale] > 1 else set(gradscope.analyze(plain).summary()["verdict"]) | {"unknown"}
    assert set(default["verdict"]) <= expected
    assert np.isfinite(default["max_grad_norm"]).all()


# -- float16 and bfloat16 autocast --------------------------------------------------------------

# PyTorch's CPU LSTM kernel (oneDNN) has no float16 version: the unwatched model itself raises
AUTOCAST_CASES = [(kind, dtype) for kind, dtype in itertools.product(("RNN_TANH", "GRU", "LSTM"), ("bfloat16", "float16"))
                  if (kind, dtype) != ("LSTM", "float16")]
TOLERANCE = {"bfloat16": dict(rtol=2e-2, atol=2e-2), "float16": dict(rtol=2e-3, atol=2e-3)}


def autocast_numbers(module, batch, dtype, watch, mode="fast"):
    """Output and parameter gradients of one step under CPU autocast, and the scope if watched."""
    module.zero_grad()
    scope = gradscope.watch(module, mode=mode) if watch else None
    if scope is not None:
        scope.start()
    try:
        with torch.autocast("cpu", dtype=getattr(torch, dtype)):
            out, loss = batch.loss(module)
        loss.float().backward()
    finally:
        if scope is not None:
            scope.stop()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad()
    return out.detach(), grads, scope


AUTOCAST_LAYOUT_CASES = [case + (layout,) for case in AUTOCAST_CASES for layout in LAYOUTS]


@pytest.mark.parametrize("kind,dtype,layout", AUTOCAST_LAYOUT_CASES, ids=["-".join(c) for c in AUTOCAST_LAYOUT_CASES])
def test_autocast_step_computes_what_the_unwatched_model_computes(kind, dtype, layout):
    module = build(kind, layout)
    batch = Batch(module, kind)
    want_out, want_grads, _ = autocast_numbers(module, batch, dtype, watch=False)
    got_out, got_grads, scope = autocast_numbers(module, batch, dtype, watch=True)
    assert got_out.dtype == want_out.dtype
    torch.testing.assert_close(got_out, want_out, **TOLERANCE[dtype])
    for name, want in want_grads.items():
        torch.testing.assert_close(got_grads[name], want, **TOLERANCE[dtype], msg=lambda m: f"{name}: {m}")
    table = scope.timesteps()
    assert len(table) and (table["nonfinite"] == 0).all()
    assert np.isfinite(table[["grad_norm", "carried_norm", "direct_norm"]].to_numpy()).all()


# the size that overflows each low-precision type: float16 tops out at 65504, bfloat16 near 3.4e38
OVERFLOW = {"float16": 1e5, "bfloat16": 3e38}
OVERFLOW_CASES = [case + (where,) for case in AUTOCAST_CASES for where in ("forward", "backward")]


@pytest.mark.parametrize("kind,dtype,where", OVERFLOW_CASES, ids=["-".join(case) for case in OVERFLOW_CASES])
def test_autocast_overflow_is_counted_and_flagged_not_raised(kind, dtype, where):
    """Inputs (forward) or a loss scale (backward, as GradScaler applies one) beyond the
    low-precision range: the model's gradients overflow; gradscope counts and flags it."""
    module = build(kind, "plain")
    batch = Batch(module, kind)
    if where == "forward":
        batch.x = batch.x * OVERFLOW[dtype]
    else:
        batch.g_out = batch.g_out * OVERFLOW[dtype]
    _, want_grads, _ = autocast_numbers(module, batch, dtype, watch=False)
    assert not all(torch.isfinite(g).all() for g in want_grads.values())  # the case does overflow
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the exact route: it steps the cell ops, so under autocast dL/dh_t is computed in the
        # low precision and overflows with the weights' gradients. (On the fast route, CPU
        # autocast keeps a fused nn.GRU's states in float32: its dL/dh_t stays finite while only
        # the weight gradients overflow, and gradscope measures dL/dh_t; docs/capture.md.)
        _, got_grads, scope = autocast_numbers(module, batch, dtype, watch=True, mode="exact")
    assert not all(torch.isfinite(g).all() for g in got_grads.values())
    table = scope.timesteps()
    assert table["nonfinite"].sum() > 0
    assert_verdicts_follow_nonfinite(scope, table)
    assert set(gradscope.analyze(scope).summary()["verdict"]) == {"nonfinite"}


def tracked_loop_run(scale):
    """A hand-written float64 tanh loop marked with scope.track, its loss scaled by ``scale``."""
    generator = torch.Generator().manual_seed(2)
    holder = torch.nn.Module()
    holder.w_hh = torch.nn.Parameter(0.5 * torch.randn(HIDDEN, HIDDEN, generator=generator, dtype=torch.float64))
    xs = torch.randn(STEPS, BATCH, HIDDEN, generator=generator, dtype=torch.float64)
    g = torch.randn(STEPS, BATCH, HIDDEN, generator=generator, dtype=torch.float64) * scale
    with gradscope.watch(holder, weights={"w_hh": holder.w_hh}) as scope:
        h, loss = torch.zeros(BATCH, HIDDEN, dtype=torch.float64), 0.0
        for t in range(STEPS):
            h = scope.track(torch.tanh(xs[t] + h @ holder.w_hh), "loop")
            loss = loss + (h * g[t]).sum()
        loss.backward()
    return scope.timesteps()


@pytest.mark.parametrize("scale", SCALES)
def test_float64_tracked_state_gradient_of_extreme_size_keeps_its_norm(scale):
    want, got = tracked_loop_run(1.0), tracked_loop_run(SCALES[scale])
    norms = ["grad_norm", "carried_norm", "direct_norm"]
    assert (got["nonfinite"] == 0).all()
    np.testing.assert_allclose(got[norms].to_numpy(), want[norms].to_numpy() * SCALES[scale], rtol=1e-12, atol=0)


# -- loops: stock cells stepped by the user, and scope.track ----------------------------------

LOOPS = ("RNNCell", "GRUCell", "track")
LOOP_CASES = list(itertools.product(LOOPS, ("input", "weight", "loss"), BAD_VALUES, ("one", "all")))


class Loop:
    """A hand-written loop over a stock cell, or over raw weights marked with scope.track; the
    loss is sum_t sum(sin(h_t) * g_t)."""

    def __init__(self, kind):
        generator = torch.Generator().manual_seed(3)
        self.kind = kind
        if kind == "track":
            self.model = torch.nn.Module()
            self.model.weight_ih = torch.nn.Parameter(torch.randn(INPUT, HIDDEN, generator=generator) / 2)
            self.model.weight_hh = torch.nn.Parameter(torch.randn(HIDDEN, HIDDEN, generator=generator) / 2)
        else:
            torch.manual_seed(3)
            self.model = getattr(torch.nn, kind)(INPUT, HIDDEN)
        self.x = torch.randn(STEPS, BATCH, INPUT, generator=generator)
        self.g = torch.randn(STEPS, BATCH, HIDDEN, generator=generator)

    def step(self, model, x, h):
        if self.kind == "track":
            return torch.tanh(x @ model.weight_ih + h @ model.weight_hh)
        return model(x, h)

    def run(self, scope=None):
        h, loss = torch.zeros(BATCH, HIDDEN), 0.0
        for t in range(STEPS):
            h = self.step(self.model, self.x[t], h)
            if scope is not None and self.kind == "track":
                h = scope.track(h, "loop")
            loss = loss + (torch.sin(h) * self.g[t]).sum()
        loss.backward()

    def reference_nonfinite(self):
        """{t: sequences whose float64 autograd dL/dh_t is not finite}."""
        model64 = copy.deepcopy(self.model).double()
        per_state = reference_loop(lambda x, h: self.step(model64, x, h), list(self.x), torch.zeros(BATCH, HIDDEN),
                                   lambda outs: sum((torch.sin(o) * g.double()).sum() for o, g in zip(outs, self.g)))
        return {t: int((~torch.isfinite(total)).any(dim=1).sum()) for (_, t), (total, _, _) in per_state.items()}


@pytest.mark.parametrize("loop,place,value,extent", LOOP_CASES, ids=["-".join(case) for case in LOOP_CASES])
def test_nonfinite_value_in_a_loop_is_counted_as_the_reference_counts_it(loop, place, value, extent):
    case = Loop(loop)
    target = {"input": case.x, "loss": case.g, "weight": case.model.weight_hh}[place]
    with torch.no_grad():
        target[(2, 1) if extent == "one" else ...] = BAD_VALUES[value]
    weights = {"w_hh": case.model.weight_hh} if loop == "track" else None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with gradscope.watch(case.model, weights=weights) as scope:
            case.run(scope)
    table = scope.timesteps()
    assert {r.t: r.nonfinite for r in table.itertuples()} == case.reference_nonfinite()
    if value == "nan":
        assert table["nonfinite"].sum() > 0
    assert_verdicts_follow_nonfinite(scope, table)


CELL_AUTOCAST_CASES = list(itertools.product(("RNNCell", "GRUCell", "LSTMCell"), ("bfloat16", "float16")))


@pytest.mark.parametrize("cell,dtype", CELL_AUTOCAST_CASES, ids=["-".join(case) for case in CELL_AUTOCAST_CASES])
def test_autocast_cell_loop_computes_what_the_unwatched_loop_computes(cell, dtype):
    torch.manual_seed(0)
    module = getattr(torch.nn, cell)(INPUT, HIDDEN)
    x = torch.randn(STEPS, BATCH, INPUT)

    def run():
        module.zero_grad()
        state, outs = None, []
        with torch.autocast("cpu", dtype=getattr(torch, dtype)):
            for t in range(STEPS):
                state = module(x[t], state)
                outs.append(state[0] if isinstance(state, tuple) else state)
        torch.stack([o.float() for o in outs]).sin().sum().backward()
        return outs, {name: p.grad.clone() for name, p in module.named_parameters()}

    want_outs, want_grads = run()
    with gradscope.watch(module) as scope:
        got_outs, got_grads = run()
    assert [o.dtype for o in got_outs] == [o.dtype for o in want_outs]
    for got, want in zip(got_outs, want_outs):
        torch.testing.assert_close(got, want, **TOLERANCE[dtype])
    for name, want in want_grads.items():
        torch.testing.assert_close(got_grads[name], want, **TOLERANCE[dtype], msg=lambda m: f"{name}: {m}")
    table = scope.timesteps()
    assert sorted(table["t"].unique()) == list(range(STEPS)) and (table["nonfinite"] == 0).all()
    assert np.isfinite(table[["grad_norm", "carried_norm", "direct_norm"]].to_numpy()).all()


# -- a run full of NaN/Inf, kept and shown ----------------------------------------------------

# LSTM: the most tables (two states, four gates); a report costs seconds, so two cases
SAVED_CASES = list(itertools.product(("LSTM",), ("weight-nan", "loss-inf")))


@pytest.mark.parametrize("kind,poisoned", SAVED_CASES, ids=["-".join(case) for case in SAVED_CASES])
def test_nonfinite_run_with_jacobians_saves_loads_analyses_and_renders(kind, poisoned, tmp_path):
    """Every table of the run (spectra and Lyapunov exponents of a NaN matrix included) goes to
    disk and back, and the report renders it as a nonfinite verdict, without an error or warning."""
    module = build(kind, "plain")
    batch = Batch(module, kind)
    place, value = poisoned.split("-")
    poison(module, batch, place, BAD_VALUES[value], "all")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with gradscope.watch(module, jacobians=True, run_dir=tmp_path / "run") as scope:
            for _ in range(2):
                _, loss = batch.loss(module)
                loss.backward()
        run = gradscope.load(tmp_path / "run")
        for table in ("timesteps", "spectra", "jacobians", "lyapunov", "gates"):
            pd_testing.assert_frame_equal(getattr(run, table)(), getattr(scope, table)(), obj=table)
        diagnosis = gradscope.analyze(tmp_path / "run")
        page = gradscope.report(tmp_path / "run", tmp_path / "report")
    assert set(diagnosis.summary()["verdict"]) == {"nonfinite"}
    json.dumps(diagnosis.to_dict(), allow_nan=False)
    html = page.read_text()
    assert "nonfinite" in html and "NaN/Inf" in html
    assert list((tmp_path / "report").rglob("*.png"))
