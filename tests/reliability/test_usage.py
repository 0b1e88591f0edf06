"""Reliability family 17.3, usage: the ways real training code drives a model, each generated
over cell kinds and the knobs of that usage. Every recorded step is held to the brute-force
autograd reference (tests/reference.py) at the weights of that moment, or, where the reference
has no form for the model, to a plain single watch already held to it elsewhere."""

import copy
import io
import itertools
import pickle
import threading

import pytest
import torch
import torch.nn as nn

import gradscope
from gradscope.errors import NoRecurrentModuleError
from tests.reference import aggregate, compare_tables, reference_module

KINDS = ("RNN_TANH", "GRU", "LSTM")
INPUT, HIDDEN, STEPS, BATCH = 3, 4, 5, 2
RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}


@pytest.fixture(params=("exact", "fast"))
def mode(request):
    """Both routes: nn.RNN/GRU/LSTM unrolled one step at a time, or fused with a reverse recursion."""
    return request.param


def make_module(kind, seed=0, dtype=torch.float64, **kwargs):
    torch.manual_seed(seed)
    cls = {"RNN_TANH": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}[kind]
    return cls(INPUT, HIDDEN, **kwargs).to(dtype)


class Batch:
    """One input batch and the loss sum(sin(out) * g_out) + sum(h_n * g_h) (+ c_n * g_c) that
    tests/reference.py differentiates, for a module of ``kind``; ``hx`` is the initial state."""

    def __init__(self, module, kind, seed, hx=None):
        gen = torch.Generator().manual_seed(seed)
        dtype = module.weight_hh_l0.dtype
        n_dir = 2 if module.bidirectional else 1
        states = module.num_layers * n_dir
        self.kind, self.hx = kind, hx
        self.x = torch.randn(STEPS, BATCH, INPUT, generator=gen, dtype=torch.float64).to(dtype)
        self.g_out = torch.randn(STEPS, BATCH, n_dir * HIDDEN, generator=gen, dtype=torch.float64).to(dtype)
        self.g_h = torch.randn(states, BATCH, HIDDEN, generator=gen, dtype=torch.float64).to(dtype)
        self.g_c = torch.randn(states, BATCH, HIDDEN, generator=gen, dtype=torch.float64).to(dtype)

    def forward(self, module):
        return module(self.x, self.hx) if self.hx is not None else module(self.x)

    def loss(self, result):
        out, final = result
        h_n, c_n = final if self.kind == "LSTM" else (final, None)
        loss = (torch.sin(out) * self.g_out).sum() + (h_n * self.g_h).sum()
        return loss if c_n is None else loss + (c_n * self.g_c).sum()

    def expected(self, module):
        """The reference means per (layer, direction, state, t), at the module's weights now."""
        n_dir = 2 if module.bidirectional else 1
        zeros = torch.zeros(module.num_layers * n_dir, BATCH, HIDDEN, dtype=torch.float64)
        h0, c0 = zeros, zeros
        if self.hx is not None:
            h0, c0 = self.hx if self.kind == "LSTM" else (self.hx, zeros)
        seqs = [self.x[:, b] for b in range(BATCH)]
        g_out = [self.g_out[:, b] for b in range(BATCH)]
        per_sample = reference_module(module, self.kind, seqs, h0, c0, g_out, self.g_h, self.g_c)
        return aggregate(per_sample, BATCH)


def assert_step(scope, step, expected, rtol):
    table = scope.timesteps()
    rows = table[table["step"] == step]
    assert (rows["call"] == 0).all(), rows
    compare_tables(rows, expected, rtol=rtol)


def assert_untouched(model):
    assert all("forward" not in m.__dict__ for m in model.modules())


# ---- several backward passes per optimizer step ------------------------------------------------

@pytest.mark.parametrize("kind,micro,every", list(itertools.product(KINDS, (2, 3), (1, 2))))
def test_gradient_accumulation_records_each_micro_batch(kind, micro, every, mode):
    module = make_module(kind)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    expected = {}
    with gradscope.watch(module, every=every, mode=mode) as scope:
        for update in range(2):
            opt.zero_grad()
            for m in range(micro):
                batch = Batch(module, kind, seed=10 * update + m)
                expected[update * micro + m] = batch.expected(module)
                batch.loss(batch.forward(module)).backward()
            opt.step()
    assert scope.steps_seen == 2 * micro
    assert scope.steps() == list(range(0, 2 * micro, every))
    for step in scope.steps():
        assert_step(scope, step, expected[step], RTOL[torch.float64])


@pytest.mark.parametrize("kind,micro", list(itertools.product(KINDS, (2, 3))))
def test_gradient_accumulation_with_optimizer_steps_measures_the_first_micro_batch(kind, micro, mode):
    module = make_module(kind)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    expected = []
    with gradscope.watch(module, mode=mode, optimizer=opt) as scope:
        for update in range(3):
            opt.zero_grad()
            for m in range(micro):
                batch = Batch(module, kind, seed=10 * update + m)
                if m == 0:
                    expected.append(batch.expected(module))
                batch.loss(batch.forward(module)).backward()
            opt.step()
    assert scope.steps_seen == 3 and scope.steps() == [0, 1, 2]
    for step, want in enumerate(expected):
        assert_step(scope, step, want, RTOL[torch.float64])


@pytest.mark.parametrize("kind,backwards", list(itertools.product(KINDS, (2, 3))))
def test_retain_graph_second_backward_keeps_the_first_numbers(kind, backwards, mode):
    module = make_module(kind)
    first, second = Batch(module, kind, seed=1), Batch(module, kind, seed=2)
    with gradscope.watch(module, mode=mode) as scope:
        loss = first.loss(first.forward(module))
        for _ in range(backwards):
            loss.backward(retain_graph=True)
        assert scope.steps_seen == 1
        second.loss(second.forward(module)).backward()
    assert scope.steps_seen == 2
    assert_step(scope, 0, first.expected(module), RTOL[torch.float64])
    assert_step(scope, 1, second.expected(module), RTOL[torch.float64])


@pytest.mark.filterwarnings(r"ignore:Using backward\(\) with create_graph=True:UserWarning")
@pytest.mark.parametrize("kind,penalty", list(itertools.product(KINDS, (False, True))))
def test_create_graph_backward_records_the_step(kind, penalty, mode):
    module = make_module(kind)
    twin = make_module(kind)
    batch = Batch(module, kind, seed=3)

    def run(model):
        loss = batch.loss(batch.forward(model))
        loss.backward(create_graph=True)
        if penalty:  # a gradient penalty: a second-order backward through the first one's graph
            grads = [p.grad for p in model.parameters()]
            model.zero_grad(set_to_none=True)
            sum(g.pow(2).sum() for g in grads).backward()
        result = [p.grad.detach().clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)  # break the parameter <-> grad cycle create_graph makes
        return result

    plain = run(twin)
    with gradscope.watch(module, mode=mode) as scope:
        watched = run(module)
    assert scope.steps_seen == 1
    assert_step(scope, 0, batch.expected(module), RTOL[torch.float64])
    for got, want in zip(watched, plain):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind,dangling,input_grad", list(itertools.product(KINDS, (1, 3), (False, True))))
def test_forwards_without_backward_then_one_with(kind, dangling, input_grad, mode):
    module = make_module(kind)
    with gradscope.watch(module, mode=mode) as scope:
        for seed in range(dangling):
            Batch(module, kind, seed=100 + seed).forward(module)  # e.g. a validation pass without no_grad
        batch = Batch(module, kind, seed=4)
        batch.x.requires_grad_(input_grad)
        batch.loss(batch.forward(module)).backward()
    assert scope.steps_seen == 1
    assert_step(scope, 0, batch.expected(module), RTOL[torch.float64])


@pytest.mark.parametrize("kind", KINDS)
def test_lbfgs_closure_calls_are_each_a_step(kind, mode):
    module = make_module(kind)
    batch = Batch(module, kind, seed=5)
    opt = torch.optim.LBFGS(module.parameters(), lr=0.5, max_iter=4, history_size=3)
    expected = []

    def closure():
        opt.zero_grad()
        expected.append(batch.expected(module))  # the weights LBFGS evaluates at this call
        loss = batch.loss(batch.forward(module))
        loss.backward()
        return loss

    with gradscope.watch(module, mode=mode) as scope:
        opt.step(closure)
        opt.step(closure)
    assert len(expected) >= 3 and scope.steps_seen == len(expected)
    for step, want in enumerate(expected):
        assert_step(scope, step, want, RTOL[torch.float64])


@pytest.mark.parametrize("kind", KINDS)
def test_lbfgs_with_optimizer_steps_measures_the_first_closure_call(kind, mode):
    module = make_module(kind)
    batch = Batch(module, kind, seed=5)
    opt = torch.optim.LBFGS(module.parameters(), lr=0.5, max_iter=4, history_size=3)
    calls = []

    def closure():
        opt.zero_grad()
        calls.append(batch.expected(module))
        loss = batch.loss(batch.forward(module))
        loss.backward()
        return loss

    firsts = []
    with gradscope.watch(module, mode=mode, optimizer=opt) as scope:
        for _ in range(2):
            firsts.append(len(calls))
            opt.step(closure)
    assert len(calls) > 2 and scope.steps_seen == 2
    for step, first in enumerate(firsts):
        assert_step(scope, step, calls[first], RTOL[torch.float64])


@pytest.mark.parametrize("kind,layers", list(itertools.product(KINDS, (1, 2))))
def test_hidden_state_detached_between_batches(kind, layers, mode):
    module = make_module(kind, num_layers=layers)
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    hx, expected = None, []
    with gradscope.watch(module, mode=mode) as scope:
        for seed in range(3):
            batch = Batch(module, kind, seed=20 + seed, hx=hx)
            expected.append(batch.expected(module))
            opt.zero_grad()
            out, final = batch.forward(module)
            batch.loss((out, final)).backward()
            opt.step()
            hx = tuple(s.detach() for s in final) if kind == "LSTM" else final.detach()
    assert scope.steps_seen == 3
    for step, want in enumerate(expected):
        assert_step(scope, step, want, RTOL[torch.float64])


@pytest.mark.parametrize("kind,dtypes", list(itertools.product(
    KINDS, ((torch.float32, torch.float64), (torch.float64, torch.float32)))), ids=str)
def test_model_moved_to_another_dtype_while_watched(kind, dtypes, mode):
    module = make_module(kind, dtype=dtypes[0])
    with gradscope.watch(module, mode=mode) as scope:
        batches = []
        for dtype in dtypes:
            module.to(dtype)
            batch = Batch(module, kind, seed=len(batches))
            batches.append((batch, batch.expected(module), dtype))
            batch.loss(batch.forward(module)).backward()
    assert_untouched(module)
    assert scope.steps_seen == 2
    for step, (batch, want, dtype) in enumerate(batches):
        assert_step(scope, step, want, RTOL[torch.float32])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", KINDS)
def test_model_moved_to_cuda_while_watched(kind, mode):
    module = make_module(kind)
    with gradscope.watch(module, mode=mode) as scope:
        cpu, gpu = Batch(module, kind, seed=0), Batch(module, kind, seed=1)
        want_cpu, want_gpu = cpu.expected(module), gpu.expected(module)  # no optimizer: same weights
        cpu.loss(cpu.forward(module)).backward()
        module.cuda()
        for name in ("x", "g_out", "g_h", "g_c"):
            setattr(gpu, name, getattr(gpu, name).cuda())
        gpu.loss(gpu.forward(module)).backward()
    assert scope.steps_seen == 2
    assert_step(scope, 0, want_cpu, RTOL[torch.float64])
    assert_step(scope, 1, want_gpu, 1e-7)


# ---- compiled and scripted models -------------------------------------------------------------

class Holder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner


COMPILED = {
    "torch.compile(model)": lambda kind: torch.compile(make_module(kind)),
    "model.compile()": lambda kind: _compiled_in_place(make_module(kind)),
    "compiled submodule": lambda kind: Holder(torch.compile(make_module(kind))),
}


def _compiled_in_place(module):
    module.compile()
    return module


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own, on importing dynamo
@pytest.mark.parametrize("kind,how", list(itertools.product(KINDS, COMPILED)))
def test_compiled_model_is_refused_at_watch_with_a_clear_message(kind, how):
    model = COMPILED[how](kind)
    forwards = [m.__dict__.get("forward") for m in model.modules()]  # an OptimizedModule sets its own
    with pytest.raises(TypeError, match=r"torch\.compile") as info:
        gradscope.watch(model)
    assert "before" in str(info.value) and "uncompiled" in str(info.value)  # says what to do instead
    assert [m.__dict__.get("forward") for m in model.modules()] == forwards


SCRIPTED = {
    "torch.jit.script": lambda module: torch.jit.script(module),
    "torch.jit.trace": lambda module: torch.jit.trace(module, torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)),
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("kind,how", list(itertools.product(KINDS, SCRIPTED)))
def test_scripted_module_is_refused_at_watch_with_a_clear_message(kind, how):
    model = SCRIPTED[how](make_module(kind))
    with pytest.raises(NoRecurrentModuleError, match="TorchScript") as info:
        gradscope.watch(model)
    assert "before" in str(info.value)  # says what to do: watch the eager module


# ---- several scopes at once ---------------------------------------------------------------------

@pytest.mark.parametrize("kinds", list(itertools.product(KINDS, repeat=2)), ids="-".join)
def test_two_models_watched_from_two_threads(kinds, mode):
    results, errors = {}, []
    barrier = threading.Barrier(2)

    def train(index, kind):
        try:
            module = make_module(kind, seed=index)
            expected = []
            with gradscope.watch(module, mode=mode) as scope:
                barrier.wait(timeout=30)
                for step in range(3):
                    batch = Batch(module, kind, seed=30 + step)
                    expected.append(batch.expected(module))
                    batch.loss(batch.forward(module)).backward()
            results[index] = (scope, expected)
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=train, args=(i, kind)) for i, kind in enumerate(kinds)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for scope, expected in results.values():
        assert scope.steps_seen == 3
        for step, want in enumerate(expected):
            assert_step(scope, step, want, RTOL[torch.float64])


class EncoderDecoder(nn.Module):
    def __init__(self, enc_kind, dec_kind):
        super().__init__()
        self.enc = make_module(enc_kind, seed=1)
        self.dec = make_module(dec_kind, seed=2)
        self.proj = nn.Linear(HIDDEN, INPUT).double()

    def forward(self, x):
        out, _ = self.enc(x)
        out, _ = self.dec(torch.tanh(self.proj(out)))
        return out.pow(2).mean()


@pytest.mark.parametrize("kinds,outer_stops_first", list(itertools.product(
    itertools.product(KINDS, repeat=2), (False, True))), ids=str)
def test_nested_watch_on_different_submodules(kinds, outer_stops_first, mode):
    model = EncoderDecoder(*kinds)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    with gradscope.watch(model, mode=mode) as whole:  # one scope over both: the numbers to agree with
        model(x).backward()
    outer = gradscope.watch(model.enc, mode=mode).start()
    inner = gradscope.watch(model.dec, mode=mode).start()
    model(x).backward()
    for scope in ((outer, inner) if outer_stops_first else (inner, outer)):
        scope.stop()
    assert_untouched(model)
    reference = whole.timesteps()
    for scope, name in ((outer, "enc"), (inner, "dec")):
        got = scope.timesteps()
        want = reference[reference["module"] == name]
        assert len(got) == len(want) > 0 and (got["module"] == "").all()
        torch.testing.assert_close(torch.tensor(got["grad_norm"].to_numpy()),
                                   torch.tensor(want["grad_norm"].to_numpy()), rtol=1e-12, atol=0)


# ---- forwards that are not steps ------------------------------------------------------------------

CONTEXTS = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


@pytest.mark.parametrize("kind,context,where", list(itertools.product(
    KINDS, CONTEXTS, ("before forward", "between forward and backward", "after backward"))))
def test_no_grad_forwards_inside_the_block_are_not_steps(kind, context, where, mode):
    module = make_module(kind)
    batch, probe = Batch(module, kind, seed=6), Batch(module, kind, seed=7)
    with torch.no_grad():
        plain = probe.forward(module)[0].clone()
    seen = []

    def side_forward():
        with CONTEXTS[context]():
            out = probe.forward(module)[0]
        assert out.grad_fn is None
        seen.append(out.clone())

    with gradscope.watch(module, mode=mode) as scope:
        if where == "before forward":
            side_forward()
        result = batch.forward(module)
        if where == "between forward and backward":
            side_forward()
        batch.loss(result).backward()
        if where == "after backward":
            side_forward()
    assert scope.steps_seen == 1
    torch.testing.assert_close(seen[0], plain, rtol=0, atol=0)
    assert_step(scope, 0, batch.expected(module), RTOL[torch.float64])


@pytest.mark.parametrize("kind,modes", list(itertools.product(
    KINDS, ("eval", "eval-train-eval", "train-eval"))))
def test_eval_steps_are_recorded_without_dropout(kind, modes, mode):
    module = make_module(kind, num_layers=2, dropout=0.5)
    expected = {}
    with gradscope.watch(module, mode=mode) as scope:
        for step, mode in enumerate(modes.split("-")):
            module.train(mode == "train")
            batch = Batch(module, kind, seed=40 + step)
            if mode == "eval":
                expected[step] = batch.expected(module)  # the reference knows no dropout: eval only
            batch.loss(batch.forward(module)).backward()
    assert scope.steps_seen == len(modes.split("-"))
    assert len(scope.timesteps()) == scope.steps_seen * 2 * STEPS * (2 if kind == "LSTM" else 1)
    for step, want in expected.items():
        assert_step(scope, step, want, RTOL[torch.float64])


# ---- copies of a watched model ------------------------------------------------------------------

def _torch_save_load(module):
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


COPIES = {"copy.deepcopy": copy.deepcopy, "pickle": lambda m: pickle.loads(pickle.dumps(m)),
          "torch.save and torch.load": _torch_save_load}


@pytest.mark.parametrize("kind,how,when", list(itertools.product(
    KINDS, COPIES, ("before any forward", "between forward and backward"))))
def test_copy_made_while_watched_is_an_unwatched_model_of_its_own(kind, how, when, mode):
    """An EMA model, a best-model snapshot or a whole-model checkpoint taken inside the block:
    the copy computes with its own weights, records nothing, and is as unwatched after the block."""
    module = make_module(kind)
    batch = Batch(module, kind, seed=8)
    with gradscope.watch(module, mode=mode) as scope:
        if when == "before any forward":
            twin = COPIES[how](module)
            result = batch.forward(module)
        else:
            result = batch.forward(module)
            twin = COPIES[how](module)
        batch.loss(result).backward()
        with torch.no_grad():
            for p in twin.parameters():
                p.mul_(0.5)  # the copy's weights are its own
        plain = make_module(kind)
        plain.load_state_dict(twin.state_dict())
        torch.testing.assert_close(batch.forward(twin)[0], plain(batch.x)[0], rtol=0, atol=0)
        batch.loss(batch.forward(twin)).backward()  # not a step of the scope: the copy is not watched
    assert scope.steps_seen == 1
    assert_step(scope, 0, batch.expected(module), RTOL[torch.float64])
    torch.testing.assert_close(batch.forward(twin)[0], plain(batch.x)[0], rtol=0, atol=0)
    with gradscope.watch(twin, mode=mode) as again:
        batch.loss(batch.forward(twin)).backward()
    assert again.steps() == [0]
    assert_step(again, 0, batch.expected(twin), RTOL[torch.float64])


# ---- activation checkpointing around the watched module ------------------------------------------

@pytest.mark.parametrize("kind,reentrant,every", list(itertools.product(KINDS, (False, True), (1, 2))))
def test_activation_checkpointing_around_the_watched_module(kind, reentrant, every, mode):
    """torch.utils.checkpoint runs the module again inside backward (stopping early, by an
    exception, without use_reentrant): the user's backward works and the steps are measured."""
    from torch.utils.checkpoint import checkpoint

    module = make_module(kind)

    def flat(x):  # the reentrant variant passes gradients only to tensors at the top level
        out, final = module(x)
        return (out,) + (tuple(final) if kind == "LSTM" else (final,))

    expected, plain_grads = [], []
    with gradscope.watch(module, every=every, mode=mode) as scope:
        for step in range(2):
            batch = Batch(module, kind, seed=50 + step)
            expected.append(batch.expected(module))
            x = batch.x.clone().requires_grad_(reentrant)  # reentrant: some input must require grad
            parts = checkpoint(flat, x, use_reentrant=reentrant)
            module.zero_grad()
            batch.loss((parts[0], parts[1:] if kind == "LSTM" else parts[1])).backward()
            plain_grads.append([p.grad.clone() for p in module.parameters()])
    assert scope.steps_seen == 2
    assert scope.steps() == list(range(0, 2, every))
    for step in scope.steps():
        assert_step(scope, step, expected[step], RTOL[torch.float64])
    for step, grads in enumerate(plain_grads):  # the parameter gradients are those of no watch
        batch = Batch(module, kind, seed=50 + step)
        module.zero_grad()
        batch.loss(batch.forward(module)).backward()
        for got, want in zip(grads, (p.grad for p in module.parameters())):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
