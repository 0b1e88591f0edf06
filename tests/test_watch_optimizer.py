"""``watch(optimizer=opt)``: a step is everything between two ``optimizer.step()`` calls, and its
first forward-and-backward is the one measured (LBFGS's first closure call, the first
micro-batch of gradient accumulation)."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import gradscope


class Seq(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 5)
        self.head = nn.Linear(5, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[-1])


def batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 4, 3, generator=g), torch.randn(4, 1, generator=g)) for _ in range(n)]


def first_backward_table(model, x, y):
    """The numbers of one forward-and-backward at the model's current weights, measured alone."""
    model.zero_grad()
    with gradscope.watch(model) as scope:
        (model(x) - y).pow(2).mean().backward()
    model.zero_grad()
    return scope.timesteps()


def test_lbfgs_counts_optimizer_steps_and_records_the_first_closure_call():
    torch.manual_seed(0)
    model = Seq()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=8)
    data = batches(4)
    closures, want = [], {}
    with gradscope.watch(model, optimizer=opt, every=2) as scope:
        for step, (x, y) in enumerate(data):
            if step % 2 == 0:  # what the first closure call of this step will see
                scope.stop()
                want[step] = first_backward_table(model, x, y)
                scope.start()

            def closure(x=x, y=y):
                closures.append(1)
                opt.zero_grad()
                loss = (model(x) - y).pow(2).mean()
                loss.backward()
                return loss

            opt.step(closure)
    assert len(closures) > 2 * len(data)  # several closure calls per optimizer step
    assert scope.steps_seen == 4
    assert scope.steps() == [0, 2]
    got = scope.timesteps()
    for step, table in want.items():
        mine = got[got["step"] == step].sort_values(["state", "t"])
        table = table.sort_values(["state", "t"])
        np.testing.assert_allclose(mine["grad_norm"].to_numpy(), table["grad_norm"].to_numpy(), rtol=1e-6)
        np.testing.assert_allclose(mine["carried_norm"].to_numpy(), table["carried_norm"].to_numpy(), rtol=1e-6,
                                   atol=1e-12)
    assert sorted(scope.spectra()["step"].unique()) == [0, 2]


def test_adam_with_gradient_accumulation_is_one_step_per_optimizer_step():
    torch.manual_seed(0)
    model = Seq()
    plain = Seq()
    plain.load_state_dict(model.state_dict())
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in (model, plain)]
    data = batches(6)
    with gradscope.watch(model, optimizer=opts[0]) as scope:
        for m, opt, sc in ((model, opts[0], scope), (plain, opts[1], None)):
            for start in (0, 3):  # two optimizer steps of three micro-batches each
                opt.zero_grad()
                for x, y in data[start:start + 3]:
                    ((m(x) - y).pow(2).mean() / 3).backward()
                opt.step()
    assert scope.steps_seen == 2
    assert scope.steps() == [0, 1]
    table = scope.timesteps()
    assert set(table["call"]) == {0} and len(table) == 2 * 2 * 6  # one sequence (h and c) per step
    # training is the model's own: the same parameters as the unwatched twin
    for a, b in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_without_optimizer_every_backward_is_a_step():
    model = Seq()
    with gradscope.watch(model) as scope:
        for x, y in batches(3):
            (model(x) - y).pow(2).mean().backward()
    assert scope.steps_seen == 3


def test_optimizer_hook_is_removed_on_stop():
    model = Seq()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, optimizer=opt) as scope:
        x, y = batches(1)[0]
        (model(x) - y).pow(2).mean().backward()
        opt.step()
    assert scope.steps_seen == 1
    opt.step()  # no longer counted
    assert scope.steps_seen == 1
    assert not opt._optimizer_step_post_hooks


def test_optimizer_must_be_an_optimizer():
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        gradscope.watch(nn.LSTM(3, 4), optimizer=[1])
