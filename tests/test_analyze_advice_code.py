"""Every piece of code in every advice is valid Python that runs against the model it was made
for (issue 12, item 4).

Real models with their recurrent parts where users put them (inside nn.Sequential, nn.ModuleList,
nested blocks, the root, names that are not identifiers, stock cells, a custom cell, a ``track``
label) are watched; Rules that force each finding kind make the analyzer produce all of them;
each snippet is compiled, then executed on a copy of the model with the names the advice assumes
bound (docs/analyze.md, "Advice code"), and may change only parameters of the part it is about.
"""

import copy
import re
from collections import OrderedDict

import pytest
import torch
from torch import nn

import gradscope
from gradscope.analysis import Rules, analyze
from gradscope.analysis.advice import path_expr
from tests.test_analyze_units import FakeSource, chain

H, T, B = 4, 6, 2

# Rules under which the analyzer produces each finding kind on these small random models
RULES = {
    "default": Rules(),
    "vanishing": Rules(min_gain=0.999),
    "exploding": Rules(max_grad_norm=1e-12),
    "saturation": Rules(saturation_share=1e-9),
}
ALL_KINDS = {"vanishing", "exploding", "nonfinite", "saturation", "spectral_bound", "no_data",
             "verdict_flips"}


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(H, H, num_layers=2, bidirectional=True)

    def forward(self, x):
        out = self.rnn(x)[0]
        return out[..., :H] + out[..., H:]


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Block(), Block()])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()

    def forward(self, x):
        return self.encoder(x)


class Sequential(nn.Module):
    """What the issue found: the RNN is item 1 of an nn.Sequential (``model.1``)."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(H, H), nn.RNN(H, H, num_layers=2))

    def forward(self, x):
        return self.seq[1](self.seq[0](x))[0]


class OddNames(nn.Module):
    """Names that are not Python identifiers: a space, a keyword, a digit-only ModuleDict key."""

    def __init__(self):
        super().__init__()
        self.parts = nn.ModuleDict({"my rnn": nn.RNN(H, H, nonlinearity="relu"),
                                    "class": nn.LSTM(H, H)})
        self.seq = nn.Sequential(OrderedDict([("lstm", nn.LSTM(H, H, bidirectional=True))]))

    def forward(self, x):
        x = self.parts["my rnn"](x)[0]
        x = self.parts["class"](x)[0]
        out = self.seq.lstm(x)[0]
        return out[..., :H] + out[..., H:]


class Cells(nn.Module):
    """Stock cells in a list, stepped by hand."""

    def __init__(self):
        super().__init__()
        self.cells = nn.ModuleList([nn.GRUCell(H, H), nn.LSTMCell(H, H), nn.RNNCell(H, H)])

    def forward(self, x):
        h = torch.zeros(x.shape[1], H)
        state = (h, h)
        g, r, outs = h, h, []
        for x_t in x:
            g = self.cells[0](x_t, g)
            state = self.cells[1](g, state)
            r = self.cells[2](state[0], r)
            outs.append(r)
        return torch.stack(outs)


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(H, H)

    def forward(self, x, h):
        return torch.tanh(self.lin(h) + x)


class CustomAndTracked(nn.Module):
    """A custom cell (watched with ``cells=``) and a hand-written loop marked with ``track``."""

    def __init__(self):
        super().__init__()
        self.cell = Custom()
        self.decoder = nn.Linear(H, H)

    def forward(self, x, scope=None):
        h, outs = torch.zeros(x.shape[1], H), []
        for x_t in x:
            h = self.cell(x_t, h)
            outs.append(h)
        d = torch.zeros(x.shape[1], H)
        for out in outs:
            d = torch.tanh(self.decoder(d) + out)
            if scope is not None:
                d = scope.track(d, "decoder")
        return d.unsqueeze(0)


MODELS = {
    "root_lstm": lambda: nn.LSTM(H, H),
    "root_rnn": lambda: nn.RNN(H, H),
    "sequential": Sequential,
    "nested": Nested,
    "odd_names": OddNames,
    "cells": Cells,
    "custom_and_tracked": CustomAndTracked,
}


def make(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    with torch.no_grad():  # sigma_max(W_hh) < 1, so the RNNs get a spectral_bound finding
        for key, param in model.named_parameters():
            if "weight_hh" in key:
                param.mul_(0.5)
    return model


def forward(model, x, scope):
    if isinstance(model, CustomAndTracked):
        return model(x, scope)
    out = model(x)
    return out[0] if isinstance(out, tuple) else out


def record(model, *, scales=(1.0, 1.0), nan_at=None, steps_T=T):
    """Watch ``len(scales)`` steps; the loss of each step is scaled (a jump makes the verdict
    change between steps); ``nan_at``: a NaN enters the loss at that position."""
    cells = ["cell"] if isinstance(model, CustomAndTracked) else ()
    generator = torch.Generator().manual_seed(1)
    with gradscope.watch(model, cells=cells) as scope:
        for scale in scales:
            x = torch.randn(steps_T, B, H, generator=generator)
            out = forward(model, x, scope)
            weight = torch.ones_like(out)
            if nan_at is not None:
                weight[min(nan_at, len(weight) - 1)] = float("nan")
            (scale * (out * weight).sum()).backward()
    return scope


def findings_of(model):
    """Every (finding, its diagnosis) the analyzer gives for ``model`` under the forcing Rules."""
    steady = record(model)
    diagnoses = [analyze(steady, rules) for rules in RULES.values()]
    diagnoses.append(analyze(record(model, nan_at=T - 2)))
    diagnoses.append(analyze(record(model, scales=(1.0, 1e9))))          # verdict_flips
    diagnoses.append(analyze(record(model, steps_T=1)))                   # no_data
    return [(f, d) for d in diagnoses for f in d.findings]


def bound_names(model, diagnosis=None, with_grads=True):
    """The names the advice assumes, bound as a user's training script binds them."""
    h = torch.zeros(B, H, requires_grad=True)
    loss = (h * 2).sum()
    if with_grads:   # gradients for clip_grad_norm_ to clip
        forward(model, torch.randn(T, B, H), None).sum().backward()
    return {"model": model, "torch": torch, "h": h, "loss": loss, "x": torch.randn(T, B, H),
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.0),
            "diagnosis": diagnosis}


def owned(finding, key, model):
    """Is parameter ``key`` (a state_dict name) one of the finding's part?"""
    prefix = finding.module + "." if finding.module else ""
    if not key.startswith(prefix) or "." in key[len(prefix):]:
        return False
    part = model.get_submodule(finding.module)
    if isinstance(part, nn.RNNBase):
        suffix = f"_l{finding.layer}" + ("_reverse" if finding.direction == "reverse" else "")
        return key.endswith(suffix)
    return True


def run_snippet(snippet, model, diagnosis=None, with_grads=True):
    """exec ``snippet`` on a copy of ``model``; returns the names of the parameters it changed."""
    copied = copy.deepcopy(model)
    names = bound_names(copied, diagnosis, with_grads)
    before = {k: v.detach().clone() for k, v in copied.state_dict().items()}
    anomaly = torch.is_anomaly_enabled()
    try:
        exec(compile(snippet, "<advice>", "exec"), names)
    finally:
        torch.set_anomaly_enabled(anomaly)
    after = copied.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def code_outside_backticks(advice):
    """Calls on model or torch written as plain text, where nobody can tell where code ends."""
    prose = re.sub(r"`[^`]*`", "", advice)
    return re.findall(r"\b(?:model|torch)\b[\w.\[\]'\"]*\(", prose)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_advice_snippet_compiles_and_runs_on_its_model(name):
    model = make(name)
    found = findings_of(model)
    assert found
    for finding, diagnosis in found:
        assert code_outside_backticks(finding.advice) == [], str(finding)
        for snippet in finding.code:
            compile(snippet, "<advice>", "exec")
            changed = run_snippet(snippet, model, diagnosis)
            if "optimizer" not in snippet:
                assert all(owned(finding, key, model) for key in changed), (snippet, changed)
            if re.search(r"\b(fill_|orthogonal_|constant_)\(", snippet):
                assert changed, snippet   # it reached a real parameter and changed it


def test_the_analyzer_gives_every_finding_kind_and_every_kind_of_code():
    found = [f for name in MODELS for f, _ in findings_of(make(name))]
    assert {f.kind for f in found} >= ALL_KINDS
    snippets = {s for f in found for s in f.code}
    expected = [
        "torch.nn.init.orthogonal_(model.seq[1].weight_hh_l1)",            # Sequential
        "torch.nn.init.orthogonal_(model.weight_hh_l0)",                   # the root
        "torch.nn.init.orthogonal_(model.get_submodule('parts.my rnn').weight_hh_l0)",
        "torch.nn.init.orthogonal_(model.cells[2].weight_hh)",             # a cell in a list
        "torch.nn.init.constant_(model.get_submodule('parts.my rnn').bias_hh_l0, 0.01)",
        "with torch.no_grad(): model.encoder.layers[1].rnn.bias_ih_l1_reverse[4:8].fill_(1.0); "
        "model.encoder.layers[1].rnn.bias_hh_l1_reverse[4:8].zero_()",     # GRU update gate
        "with torch.no_grad(): model.bias_ih_l0[4:8].fill_(1.0); "
        "model.bias_hh_l0[4:8].zero_()",                                   # LSTM forget gate
        "with torch.no_grad(): model.cells[0].bias_ih[4:8].fill_(1.0); "
        "model.cells[0].bias_hh[4:8].zero_()",
        "h = h.detach()", "optimizer.step()", "torch.autograd.set_detect_anomaly(True)",
        "torch.isfinite(loss).all()", "diagnosis.per_step()",
    ]
    missing = [s for s in expected if s not in snippets]
    assert not missing, (missing, sorted(snippets))
    assert any(s.startswith("torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=")
               for s in snippets)
    # the custom cell and the tracked state have no stock parameter names: words, not code
    for f in found:
        if f.module in ("cell", "decoder"):
            assert all("model." not in s or s.startswith("torch.nn.utils.clip_grad_norm_")
                       for s in f.code), str(f)


def test_chrono_bias_and_unknown_hidden_size_give_runnable_code():
    """An LSTM whose forget gates are already open gets a bias of log(required horizon); a run
    whose meta lacks the hidden size gets the gate's rows as ``.chunk(4)[1]``."""
    model = nn.ModuleDict({"lstm": nn.LSTM(H, H)})
    rows = chain(0.85, module="lstm", cell="LSTM")
    gates = [dict(step=0, module="lstm", call=0, layer=0, direction="forward", gate="f",
                  activation="sigmoid", count=100, mean=0.9, low=0.0, high=0.2)]
    d = analyze(FakeSource(rows, gates=gates, meta={"modules": {"lstm": {"kind": "module"}}}))
    [snippet] = d.by_kind("vanishing")[0].code[:1]
    assert snippet == ("with torch.no_grad(): model.lstm.bias_ih_l0.chunk(4)[1].fill_(4.1); "
                       "model.lstm.bias_hh_l0.chunk(4)[1].zero_()")
    changed = run_snippet(snippet, model, with_grads=False)
    assert changed == {"lstm.bias_ih_l0", "lstm.bias_hh_l0"}
    copied = copy.deepcopy(model)
    exec(snippet, {"model": copied, "torch": torch})
    assert torch.equal(copied.lstm.bias_ih_l0[H:2 * H], torch.full((H,), 4.1))
    assert torch.equal(copied.lstm.bias_ih_l0[:H], model.lstm.bias_ih_l0[:H])
    assert not copied.lstm.bias_hh_l0[H:2 * H].any()


@pytest.mark.parametrize("name,expr", [
    ("", "model"),
    ("1", "model[1]"),
    ("rnn", "model.rnn"),
    ("encoder.layers.0.rnn", "model.encoder.layers[0].rnn"),
    ("blocks.10.cell", "model.blocks[10].cell"),
    ("parts.my rnn", "model.get_submodule('parts.my rnn')"),
    ("parts.class", "model.get_submodule('parts.class')"),
    ("seq.01", "model.get_submodule('seq.01')"),
    ("a-b.rnn", "model.get_submodule('a-b.rnn')"),
])
def test_module_paths_are_python_expressions(name, expr):
    assert path_expr(name) == expr
    compile(expr, "<path>", "eval")


def test_the_report_sets_advice_code_as_code():
    from gradscope.reporting.sections import advice_html
    text = "Initialise it: `torch.nn.init.orthogonal_(model[1].weight_hh_l0)` or use <LSTM>."
    assert advice_html(text) == ("Initialise it: <code>torch.nn.init.orthogonal_(model[1]."
                                 "weight_hh_l0)</code> or use &lt;LSTM&gt;.")
