"""``scope.track(h, label)`` for hand-written loops with no module per step.

Each call marks the next time step of ``label``. Only the total gradient of the marked tensor
is known (its hook sees every use), so carried and direct are NaN for these rows.
"""

import torch

STATE_NAMES = ("h", "c")


class TrackRecord:
    def __init__(self, label):
        self.label = label
        self.next_t = 0
        self.sums = {}  # (state, t) -> tensor [sum of norms, nonfinite count]
        self.batch = {}  # (state, t) -> active sequences

    def add(self, state, t, grad):
        flat = grad.reshape(-1, grad.shape[-1]) if grad.dim() > 1 else grad.reshape(1, -1)
        total = torch.linalg.vector_norm(flat, dim=1, dtype=torch.float64)
        nonfinite = (~torch.isfinite(flat)).any(dim=1).to(torch.float64)
        self.sums[(state, t)] = torch.stack([total.sum(), nonfinite.sum()])
        self.batch[(state, t)] = flat.shape[0]


def track(ctx, value, label):
    """Mark ``value`` (h, or a tuple (h, c, ...)) as the next time step of ``label``."""
    if not isinstance(label, str):
        raise TypeError(f"scope.track(value, label): label must be a str, got {type(label).__name__}")
    tensors = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    for item in tensors:
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"scope.track(value, {label!r}): value must be a tensor or a tuple of tensors, "
                            f"got {type(item).__name__}")
    if len(tensors) > len(STATE_NAMES):
        raise ValueError(f"scope.track(value, {label!r}): at most {len(STATE_NAMES)} states (h, c), got {len(tensors)}")
    if not any(t.requires_grad for t in tensors):
        return value
    step = ctx.step
    record = step.tracks.get(label)
    if record is None:
        record = step.tracks[label] = TrackRecord(label)
    t = record.next_t
    record.next_t += 1
    for state, tensor in zip(STATE_NAMES, tensors):
        if not tensor.requires_grad:
            continue
        if step.recorded:
            ctx.hook(tensor, lambda g, st=state, t=t: record.add(st, t, g))
        elif t == 0:
            ctx.hook(tensor, lambda g: None)  # only to learn that backward went through this step
    return value
