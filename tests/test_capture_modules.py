"""nn.RNN / nn.GRU / nn.LSTM in every configuration, exact route (the oracle of the fast route,
tests/test_capture_fast.py): total, carried and direct gradient norms
per state and time step equal a brute-force autograd reference; outputs and parameter
gradients equal the unwatched module's."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import gradscope
from tests.reference import aggregate, compare_tables, reference_module
from tests.reliability.modules import tame_relu
from tests.settings import setting_id, settings

INPUT, HIDDEN, STEPS, BATCH = 3, 4, 6, 3
CASES = list(settings())


def build(kind, extra):
    dtype = torch.float64 if extra.get("dtype") == "float64" else torch.float32
    cls = {"RNN_TANH": torch.nn.RNN, "RNN_RELU": torch.nn.RNN, "GRU": torch.nn.GRU, "LSTM": torch.nn.LSTM}[kind]
    kwargs = dict(num_layers=extra.get("num_layers", 1), bidirectional=extra.get("bidirectional", False),
                  batch_first=extra.get("batch_first", False), bias=extra.get("bias", True),
                  dropout=extra.get("dropout", 0.0))
    if kind.startswith("RNN"):
        kwargs["nonlinearity"] = "relu" if kind == "RNN_RELU" else "tanh"
    if extra.get("proj_size"):
        kwargs["proj_size"] = extra["proj_size"]
    module = cls(INPUT, HIDDEN, **kwargs).to(dtype)
    if kind == "RNN_RELU":  # keep relu units alive and bounded
        tame_relu(module)
    module.train(extra.get("train", True))
    return module, dtype


class Inputs:
    """One batch in the form the setting asks for, plus the per-sample view the reference needs."""

    def __init__(self, module, kind, extra, dtype, generator):
        n_dir = 2 if module.bidirectional else 1
        size_h = module.proj_size or module.hidden_size
        batch = 1 if extra.get("unbatched") else BATCH
        self.lengths = [STEPS] * batch
        if extra.get("packed"):
            self.lengths = [STEPS, STEPS - 2, 3][:batch] if extra["packed"] == "unsorted" else [STEPS, 4, 2][:batch]
        self.padded = torch.randn(STEPS, batch, INPUT, generator=generator, dtype=dtype)
        for b, n in enumerate(self.lengths):
            self.padded[n:, b] = 0
        self.g_out = torch.randn(STEPS, batch, n_dir * size_h, generator=generator, dtype=dtype)
        for b, n in enumerate(self.lengths):
            self.g_out[n:, b] = 0
        layers = module.num_layers * n_dir
        self.g_h = torch.randn(layers, batch, size_h, generator=generator, dtype=dtype)
        self.g_c = torch.randn(layers, batch, module.hidden_size, generator=generator, dtype=dtype)
        self.h0 = self.c0 = None
        if extra.get("hx"):
            self.h0 = torch.randn(layers, batch, size_h, generator=generator, dtype=dtype)
            self.c0 = torch.randn(layers, batch, module.hidden_size, generator=generator, dtype=dtype)
        self.kind, self.extra, self.module = kind, extra, module

    def call(self, module):
        extra = self.extra
        if extra.get("packed"):
            x = pack_padded_sequence(self.padded, torch.tensor(self.lengths),
                                     enforce_sorted=extra["packed"] == "sorted")
        elif extra.get("unbatched"):
            x = self.padded[:, 0]
        elif extra.get("batch_first"):
            x = self.padded.transpose(0, 1)
        else:
            x = self.padded
        hx = None
        if self.h0 is not None:
            h0, c0 = (self.h0[:, 0], self.c0[:, 0]) if extra.get("unbatched") else (self.h0, self.c0)
            hx = (h0, c0) if self.kind == "LSTM" else h0
        return module(x, hx) if hx is not None else module(x)

    def loss(self, result):
        out, hn = result
        extra = self.extra
        if extra.get("packed"):
            out = pad_packed_sequence(out, total_length=STEPS)[0]
        elif extra.get("unbatched"):
            out = out.unsqueeze(1)
        elif extra.get("batch_first"):
            out = out.transpose(0, 1)
        h_n, c_n = hn if self.kind == "LSTM" else (hn, None)
        if extra.get("unbatched"):
            h_n = h_n.unsqueeze(1)
            c_n = c_n.unsqueeze(1) if c_n is not None else None
        loss = (torch.sin(out) * self.g_out).sum() + (h_n * self.g_h).sum()
        if c_n is not None:
            loss = loss + (c_n * self.g_c).sum()
        return loss

    def masks(self, seed):
        """The dropout multipliers PyTorch draws between layers after manual_seed(seed)."""
        module = self.module
        if not (module.training and module.dropout > 0 and module.num_layers > 1):
            return None
        n_dir = 2 if module.bidirectional else 1
        width = n_dir * (module.proj_size or module.hidden_size)
        torch.manual_seed(seed)
        masks = []
        for _ in range(module.num_layers - 1):
            if self.extra.get("packed"):
                packed = pack_padded_sequence(torch.ones(STEPS, len(self.lengths), width), torch.tensor(self.lengths),
                                              enforce_sorted=self.extra["packed"] == "sorted")
                drawn = F.dropout(torch.ones_like(packed.data), module.dropout, True)
                data = packed._replace(data=drawn)
                padded = pad_packed_sequence(data, total_length=STEPS)[0]
            else:
                padded = F.dropout(torch.ones(STEPS, len(self.lengths), width), module.dropout, True)
            masks.append([padded[:, b] for b in range(len(self.lengths))])
        return masks

    def reference(self, seed):
        module = self.module
        n_dir = 2 if module.bidirectional else 1
        layers = module.num_layers * n_dir
        batch = len(self.lengths)
        size_h = module.proj_size or module.hidden_size
        h0 = self.h0 if self.h0 is not None else torch.zeros(layers, batch, size_h)
        c0 = self.c0 if self.c0 is not None else torch.zeros(layers, batch, module.hidden_size)
        seqs = [self.padded[:n, b] for b, n in enumerate(self.lengths)]
        g_out = [self.g_out[:, b] for b in range(batch)]
        per_sample = reference_module(module, self.kind, seqs, h0, c0, g_out, self.g_h, self.g_c,
                                      masks=self.masks(seed))
        return aggregate(per_sample, batch)


@pytest.mark.parametrize("kind,extra", CASES, ids=[setting_id(k, e) for k, e in CASES])
def test_norms_match_autograd_reference(kind, extra):
    torch.manual_seed(0)
    module, dtype = build(kind, extra)
    inputs = Inputs(module, kind, extra, dtype, torch.Generator().manual_seed(1))
    seed = 1234
    with gradscope.watch(module, mode="exact") as scope:
        torch.manual_seed(seed)
        inputs.loss(inputs.call(module)).backward()
    table = scope.timesteps()
    expected = inputs.reference(seed)
    compare_tables(table, expected, rtol=1e-9 if dtype == torch.float64 else 1e-4)
    assert (table["module"] == "").all() and (table["cell"] == kind).all()
    assert (table["call"] == 0).all() and (table["step"] == 0).all() and (table["nonfinite"] == 0).all()


def outputs_and_grads(kind, extra, mode):
    """Outputs, final states and parameter gradients of one step of a grid module, unwatched and
    watched with ``mode``: ``(watched, plain, dtype)``, each a list of tensors."""
    torch.manual_seed(0)
    module, dtype = build(kind, extra)
    inputs = Inputs(module, kind, extra, dtype, torch.Generator().manual_seed(1))

    def run():
        module.zero_grad()
        torch.manual_seed(7)
        result = inputs.call(module)
        inputs.loss(result).backward()
        out = result[0].data if extra.get("packed") else result[0]
        hidden = result[1] if kind == "LSTM" else (result[1],)
        return [out.detach()] + [h.detach() for h in hidden] + [p.grad.clone() for p in module.parameters()]

    plain = run()
    with gradscope.watch(module, mode=mode):
        watched = run()
    return watched, plain, dtype


@pytest.mark.parametrize("kind,extra", CASES, ids=[setting_id(k, e) for k, e in CASES])
def test_outputs_and_parameter_grads_unchanged(kind, extra):
    watched, plain, dtype = outputs_and_grads(kind, extra, "exact")
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-6)
    for got, want in zip(watched, plain):
        torch.testing.assert_close(got, want, **tol)
