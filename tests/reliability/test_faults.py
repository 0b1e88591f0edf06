"""Reliability family 17.1, faults: an exception or a KeyboardInterrupt at every point of a
training step, and SIGKILL between steps and inside the writing of one, generated over models
(stock modules, stock cells, a custom cell) and how many steps closed before.

After each fault: every patch and hook gone, ``state_dict`` exactly as at the fault, forward
outputs exactly those of an unwatched copy, the run folder holding every closed step (equal to
the scope's rows) and loading with at most one warning; caught inside the block, training goes
on and the later steps are recorded as if nothing had happened.
"""

import functools
import itertools
import os
import signal
import sys
import traceback
import warnings

import pandas.testing as pdt
import pytest
import torch
import torch.nn as nn
import torch.nn.utils.parametrize as parametrize

import gradscope
from gradscope.errors import GradscopeWarning

INPUT, HIDDEN, STEPS, BATCH = 3, 5, 6, 2
KINDS = {"RuntimeError": lambda: RuntimeError("injected fault"), "KeyboardInterrupt": KeyboardInterrupt}


# ---- the models: each calls ``self.trap("forward")`` inside its forward -----------------------

class Faultable(nn.Module):
    def trap(self, where):  # replaced per test by an instance attribute that may raise or kill
        pass


class LSTMHead(Faultable):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(INPUT, HIDDEN, num_layers=2)
        self.head = nn.Linear(HIDDEN, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        self.trap("forward")  # the recurrent part has run, the head has not
        return self.head(out[-1])


class BiGRUHead(Faultable):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(INPUT, HIDDEN, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * HIDDEN, 1)

    def forward(self, x):
        out, _ = self.rnn(x.transpose(0, 1))
        self.trap("forward")
        return self.head(out[:, -1])


class LSTMCellLoop(Faultable):
    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(INPUT, HIDDEN)
        self.head = nn.Linear(HIDDEN, 1)

    def forward(self, x):
        state = None
        for t in range(x.shape[0]):
            state = self.cell(x[t], state) if state is not None else self.cell(x[t])
            if t == x.shape[0] // 2:
                self.trap("forward")  # in the middle of the sequence
        return self.head(state[0])


class ParametrizedGRUHead(Faultable):
    """A GRU whose recurrent weight is a parametrization: the trap runs inside the watched
    module's own forward, where gradscope's exact route reads the weight."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(INPUT, HIDDEN, num_layers=2)
        owner = [self]  # a list, so the parametrization does not register the model as a child

        class Trapped(nn.Module):
            def forward(self, weight):
                owner[0].trap("inside the module")
                return weight

        parametrize.register_parametrization(self.rnn, "weight_hh_l1", Trapped())
        self.head = nn.Linear(HIDDEN, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        self.trap("forward")
        return self.head(out[-1])


class TanhCell(nn.Module):
    def __init__(self, owner):
        super().__init__()
        self.ih = nn.Linear(INPUT, HIDDEN)
        self.hh = nn.Linear(HIDDEN, HIDDEN, bias=False)
        self.owner = [owner]

    def forward(self, x, h):
        self.owner[0].trap("inside the module")
        return torch.tanh(self.ih(x) + self.hh(h))


class CustomCellLoop(Faultable):
    def __init__(self):
        super().__init__()
        self.cell = TanhCell(self)
        self.head = nn.Linear(HIDDEN, 1)

    def forward(self, x):
        h = torch.zeros(x.shape[1], HIDDEN, dtype=x.dtype)
        for t in range(x.shape[0]):
            h = self.cell(x[t], h)
            if t == x.shape[0] // 2:
                self.trap("forward")
        return self.head(h)


MODELS = {"lstm": (LSTMHead, {}), "lstm-exact-route": (LSTMHead, {"mode": "exact"}),
          "lstm-optimizer-steps": (LSTMHead, {"optimizer": True}), "gru-bidirectional": (BiGRUHead, {}), "gru-parametrized": (ParametrizedGRUHead, {}),
          "lstmcell-loop": (LSTMCellLoop, {}), "custom-cell": (CustomCellLoop, {"cells": ["cell"]})}


def watch_kwargs(name, opt):
    """The model's watch arguments; ``optimizer=True`` stands for the training's optimizer."""
    kwargs = dict(MODELS[name][1])
    kwargs.setdefault("spectra_every", 1)  # every step writes spectra: a fault can hit their files
    if kwargs.get("optimizer"):
        kwargs["optimizer"] = opt
    return kwargs


def counted(name, prior, point):
    """Steps counted after a fault at ``point`` following ``prior`` clean steps: a step ends at
    its backward, or with watch(optimizer=) at optimizer.step()."""
    if MODELS[name][1].get("optimizer"):
        return prior + (point == "after-step")
    return prior + (point in CLOSES_THE_STEP)


def build(name):
    torch.manual_seed(0)
    return MODELS[name][0]().double()


def batch(step):
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(STEPS, BATCH, INPUT, generator=gen, dtype=torch.float64)
    return x, torch.randn(BATCH, 1, generator=gen, dtype=torch.float64)


# ---- one training step with a fault at a named point --------------------------------------------

POINTS = ("forward", "loss", "backward-start", "backward-end", "optimizer-step", "after-step")
INSIDE = {"gru-parametrized", "custom-cell"}  # models whose watched part calls the trap itself


def points(name):
    return POINTS + (("inside the module",) if name in INSIDE else ())


def cases(*more):
    return [(name, point) + rest for name in MODELS for point in points(name) for rest in itertools.product(*more)]
CLOSES_THE_STEP = {"optimizer-step", "after-step"}  # a backward pass went through before the fault


def train_step(model, opt, step, trap):
    """Forward, loss, backward, optimizer step; ``trap(where)`` is called at every point."""
    model.trap = trap
    x, y = batch(step)
    x.requires_grad_()  # its gradient arrives last: a hook on it fires after gradscope's probes
    x.register_hook(lambda g: trap("backward-end"))
    loss = (model(x) - y).pow(2).mean()
    trap("loss")
    loss.register_hook(lambda g: trap("backward-start"))
    opt.zero_grad()
    loss.backward()
    opt.step()
    trap("after-step")


def make_optimizer(model, trap_holder):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.register_step_pre_hook(lambda *_: trap_holder[0]("optimizer-step"))
    return opt


def no_trap(where):
    pass


class Fault:
    """A trap that raises ``kind`` at ``point``, remembering the model's state there. It raises
    the same exception again if reached again in that step (gradscope's exact route, failing,
    runs the module's own code, which reaches it once more)."""

    def __init__(self, model, point, kind):
        self.model, self.point, self.kind = model, point, kind
        self.state, self.raised = None, None

    def __call__(self, where):
        if where == self.point:
            if self.raised is None:
                self.state = {k: v.clone() for k, v in self.model.state_dict().items()}
                self.raised = KINDS[self.kind]()
            raise self.raised


def hooks_snapshot(model):
    """Everything a watch could leave behind on a model, as comparable values."""
    modules = {name: ("forward" in m.__dict__, dict(m._forward_hooks), dict(m._forward_pre_hooks),
                      dict(m._backward_hooks), dict(getattr(m, "_backward_pre_hooks", {})),
                      dict(m._state_dict_hooks), dict(m._load_state_dict_pre_hooks))
               for name, m in model.named_modules()}
    params = {name: (p._backward_hooks and dict(p._backward_hooks)) for name, p in model.named_parameters()}
    return modules, params, dict(nn.modules.module._global_forward_hooks)


def optimizer_hooks(opt):
    return dict(opt._optimizer_step_pre_hooks), dict(opt._optimizer_step_post_hooks)


def assert_model_as_unwatched(model, name, state):
    """Same state_dict as ``state`` (bitwise) and the same outputs, through the same kernels,
    as an unwatched copy holding it."""
    now = model.state_dict()
    assert list(now) == list(state)
    for key, value in state.items():
        torch.testing.assert_close(now[key], value, rtol=0, atol=0)
    twin = build(name)
    twin.load_state_dict(state)
    x = batch(999)[0].requires_grad_()
    model.trap = twin.trap = no_trap
    got, want = model(x), twin(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert type(got.grad_fn) is type(want.grad_fn)


def load_quietly(run_dir):
    """Load a run folder; at most one warning (a GradscopeWarning) may be said."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        run = gradscope.load(run_dir)
    assert len(said) <= 1 and all(issubclass(w.category, GradscopeWarning) for w in said), \
        [str(w.message) for w in said]
    return run


def assert_run_equals_scope(run, scope):
    assert run.steps() == scope.steps()
    for table in ("timesteps", "spectra"):
        got, want = getattr(run, table)(), getattr(scope, table)()
        pdt.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_exact=False,
                               rtol=1e-12)


# ---- exception and KeyboardInterrupt: escaping the block, and caught inside it -------------------

@pytest.mark.parametrize("name,point,kind,prior", cases(KINDS, (0, 1)))
def test_fault_escaping_the_block_leaves_model_and_run_whole(tmp_path, name, point, kind, prior):
    model = build(name)
    trap = [no_trap]
    opt = make_optimizer(model, trap)
    before = hooks_snapshot(model), optimizer_hooks(opt)
    fault = Fault(model, point, kind)
    with pytest.raises(BaseException) as info:
        with gradscope.watch(model, run_dir=tmp_path / "run", **watch_kwargs(name, opt)) as scope:
            for step in range(prior):
                train_step(model, opt, step, no_trap)
            trap[0] = fault
            train_step(model, opt, prior, fault)
    assert info.value is fault.raised  # the user's own exception, untouched
    assert (hooks_snapshot(model), optimizer_hooks(opt)) == before
    assert_model_as_unwatched(model, name, fault.state)
    assert scope.steps_seen == counted(name, prior, point)
    assert scope.steps() == list(range(prior + (point in CLOSES_THE_STEP)))  # measured at its backward
    assert_run_equals_scope(load_quietly(tmp_path / "run"), scope)


def recorded_alone(name, state, step):
    """The rows a fresh scope records for one clean step from ``state`` (the oracle: a step's
    numbers depend on nothing that happened before it but the weights)."""
    model = build(name)
    model.load_state_dict(state)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, **watch_kwargs(name, opt)) as scope:
        train_step(model, opt, step, no_trap)
    return scope.timesteps().drop(columns="step").reset_index(drop=True)


@pytest.mark.parametrize("name,point,kind", cases(KINDS))
def test_fault_caught_inside_the_block_then_training_goes_on(tmp_path, name, point, kind):
    model = build(name)
    trap = [no_trap]
    opt = make_optimizer(model, trap)
    fault = Fault(model, point, kind)
    with gradscope.watch(model, run_dir=tmp_path / "run", **watch_kwargs(name, opt)) as scope:
        train_step(model, opt, 0, no_trap)
        trap[0] = fault
        try:
            train_step(model, opt, 1, fault)
        except (Exception, KeyboardInterrupt) as err:
            assert err is fault.raised
        trap[0] = no_trap
        state = {k: v.clone() for k, v in model.state_dict().items()}
        train_step(model, opt, 2, no_trap)
    closed = counted(name, 1, point) + 1
    assert scope.steps_seen == closed and scope.steps() == list(range(closed))
    table = scope.timesteps()
    got = table[table["step"] == closed - 1].drop(columns="step").reset_index(drop=True)
    if MODELS[name][1].get("optimizer") and point == "optimizer-step":
        state, batch_of = fault.state, 1  # no optimizer step ended step 1: its first backward is its numbers
    else:
        batch_of = 2
    pdt.assert_frame_equal(got, recorded_alone(name, state, batch_of), check_exact=False, rtol=1e-12)
    assert_run_equals_scope(load_quietly(tmp_path / "run"), scope)


# ---- SIGKILL: between steps, and inside the writing of a step -------------------------------------

KILL_STEP = 1  # the step during or after which the process dies (step 0 is whole on disk)
BETWEEN = ("after backward", "after optimizer step", "inside the next forward")
WRITES = [(target, moment) for target in ("timesteps.csv", "spectra.csv", "values.jsonl", "steps.jsonl")
          for moment in ("before", "half", "after")] + [("fsync", "before")]


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _arm_write_kill(target, moment):
    """In the child: SIGKILL at ``moment`` of the write to ``target`` during step KILL_STEP."""
    from gradscope.store import writer as writer_module

    writer_cls = writer_module.RunWriter
    current = {}
    original_write_step, original_write_all, original_sync = \
        writer_cls.write_step, writer_module.write_all, writer_cls._sync

    def write_step(self, step, tables, values=()):
        current.update(step=step, names={fd: name for name, fd in self._fds.items()})
        return original_write_step(self, step, tables, values)

    def write_all(fd, data):
        if current.get("step") == KILL_STEP and current["names"].get(fd) == target:
            if moment == "before":
                _die()
            if moment == "half":
                original_write_all(fd, data[: len(data) // 2])
                _die()
            original_write_all(fd, data)
            _die()
        original_write_all(fd, data)

    def sync(self, fds):
        if target == "fsync" and current.get("step") == KILL_STEP:
            _die()
        original_sync(self, fds)

    writer_cls.write_step, writer_module.write_all, writer_cls._sync = write_step, write_all, sync


def _child(name, run_dir, point):
    """Train KILL_STEP + 2 steps under watch; die at ``point`` (a write kill is armed already)."""
    torch.set_num_threads(1)
    model = build(name)
    trap = [no_trap]
    opt = make_optimizer(model, trap)
    at = {"after backward": ("optimizer-step", KILL_STEP), "after optimizer step": ("after-step", KILL_STEP),
          "inside the next forward": ("forward", KILL_STEP + 1)}.get(point)
    with gradscope.watch(model, run_dir=run_dir, **watch_kwargs(name, opt)):
        for step in range(KILL_STEP + 2):
            def killer(where, step=step):
                if (where, step) == at:
                    _die()

            trap[0] = killer
            train_step(model, opt, step, killer)


def run_killed(name, run_dir, point):
    """Fork a child that trains under watch and dies by SIGKILL at ``point``."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            if point not in BETWEEN:
                _arm_write_kill(*point)
            _child(name, run_dir, point)
        except BaseException:
            traceback.print_exc(file=sys.stderr)
            code = 4
        finally:
            os._exit(code)  # never back into pytest; reaching here means the kill did not happen
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"child ended with status {status}"


@functools.lru_cache(maxsize=None)
def uninterrupted(name):
    """The rows of the same training, in this process, never killed."""
    model = build(name)
    trap = [no_trap]
    opt = make_optimizer(model, trap)
    with gradscope.watch(model, **watch_kwargs(name, opt)) as scope:
        for step in range(KILL_STEP + 2):
            train_step(model, opt, step, no_trap)
    return scope


# the write points are the writer's: one model; between steps: a stock module and a stock cell
SIGKILL_CASES = [(name, point) for name in ("lstm", "lstmcell-loop") for point in BETWEEN] + \
    [("lstm", point) for point in WRITES]


@pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(signal, "SIGKILL"), reason="needs POSIX fork and SIGKILL")
@pytest.mark.parametrize("name,point", SIGKILL_CASES,
                         ids=lambda v: "-".join(v) if isinstance(v, tuple) else v)
def test_sigkill_keeps_every_closed_step(tmp_path, name, point):
    run_killed(name, tmp_path / "run", point)
    run = load_quietly(tmp_path / "run")
    committed = point in BETWEEN or point == ("steps.jsonl", "after")  # the commit line was whole
    closed = KILL_STEP + 1 if committed else KILL_STEP
    assert run.steps() == list(range(closed))
    whole = uninterrupted(name)
    for table in ("timesteps", "spectra"):
        want = getattr(whole, table)()
        want = want[want["step"] < closed].reset_index(drop=True)
        pdt.assert_frame_equal(getattr(run, table)().reset_index(drop=True), want, check_exact=False, rtol=1e-12)


# ---- an interrupt or a full disk inside the writing of a step, in-process -------------------------

WRITE_FAULTS = ("KeyboardInterrupt escaping", "KeyboardInterrupt caught", "OSError (disk full)")


@pytest.mark.parametrize("fault,point", list(itertools.product(WRITE_FAULTS, WRITES)),
                         ids=lambda v: "-".join(v) if isinstance(v, tuple) else v)
def test_fault_inside_writing_a_step_loses_only_that_step(tmp_path, monkeypatch, fault, point):
    """Ctrl-C or ENOSPC part-way through writing step KILL_STEP: the steps written before it,
    and (caught, or a full disk that gradscope reports) every step written after it, load."""
    from gradscope.store import writer as writer_module

    target, moment = point
    writer_cls = writer_module.RunWriter
    current = {"step": None, "names": {}}
    original_write_step, original_write_all, original_sync = \
        writer_cls.write_step, writer_module.write_all, writer_cls._sync

    def fail():
        if fault.startswith("KeyboardInterrupt"):
            raise KeyboardInterrupt
        raise OSError(28, "No space left on device")

    def write_step(self, step, tables, values=()):
        current.update(step=step, names={fd: name for name, fd in self._fds.items()})
        return original_write_step(self, step, tables, values)

    def write_all(fd, data):
        if current["step"] == KILL_STEP and current["names"].get(fd) == target:
            current["step"] = None  # once
            if moment == "before":
                fail()
            original_write_all(fd, data[: len(data) // 2] if moment == "half" else data)
            fail()
        original_write_all(fd, data)

    def sync(self, fds):
        if target == "fsync" and current["step"] == KILL_STEP:
            current["step"] = None
            fail()
        original_sync(self, fds)

    monkeypatch.setattr(writer_cls, "write_step", write_step)
    monkeypatch.setattr(writer_module, "write_all", write_all)
    monkeypatch.setattr(writer_cls, "_sync", sync)

    model = build("lstm")
    opt = make_optimizer(model, [no_trap])
    steps = 2 if fault == "KeyboardInterrupt escaping" else 4
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        try:
            with gradscope.watch(model, run_dir=tmp_path / "run", spectra_every=1) as scope:
                for step in range(steps):
                    try:
                        train_step(model, opt, step, no_trap)
                    except KeyboardInterrupt:
                        if fault == "KeyboardInterrupt escaping":
                            raise
        except KeyboardInterrupt:
            assert fault == "KeyboardInterrupt escaping"
    reported = [str(w.message) for w in said if issubclass(w.category, GradscopeWarning)]
    assert len(reported) == (fault.startswith("OSError")), reported  # a full disk is said, once
    monkeypatch.undo()
    committed = point == ("steps.jsonl", "after")  # the commit line was whole before the fault
    run = load_quietly(tmp_path / "run")
    assert scope.steps() == list(range(steps))
    want = [s for s in range(steps) if s != KILL_STEP or committed]
    assert run.steps() == want
    for table in ("timesteps", "spectra"):
        live = getattr(scope, table)()
        live = live[live["step"].isin(want)].reset_index(drop=True)
        pdt.assert_frame_equal(getattr(run, table)().reset_index(drop=True), live, check_exact=False, rtol=1e-12)
