"""A small, plain training loop for the demo (Adam, gradient clipping, fresh data each step)."""

import torch

from gradscope.tasks.base import seeded_generator


def train(model, task, steps, *, batch_size=32, lr=1e-2, clip=1.0, seed=0, on_step=None):
    """Train ``model`` on ``task`` for ``steps`` batches; returns the list of training losses.

    ``on_step(step, loss)`` is called after each optimizer step (for progress bars).
    Clipping keeps one exploding batch from wrecking the run; the gradients gradscope records
    are taken by backward, before clipping.
    """
    generator = seeded_generator(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        x, y = task.batch(batch_size, generator)
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(model(x), y)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
    return losses


@torch.no_grad()
def evaluate(model, task, *, batch_size=512, seed=12345):
    """Loss on a fixed held-out batch (its own seed; the eval split for text tasks)."""
    was_training = model.training
    model.eval()
    x, y = task.batch(batch_size, seeded_generator(seed), split="eval")
    loss = float(task.loss(model(x), y))
    model.train(was_training)
    return loss
