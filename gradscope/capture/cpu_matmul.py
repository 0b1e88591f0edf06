"""Matrix products of the fast route's own BPTT on the CPU, through oneDNN where PyTorch has it.

PyTorch's ``torch.mm`` on the CPU calls its BLAS (MKL in the official wheels); its fused CPU LSTM
and its compiled models call oneDNN instead (``torch.ops.mkldnn._linear_pointwise``). On the
2-core AMD machine this project is measured on, oneDNN's product ran 1.4x to 2.8x faster than
``torch.mm`` at the recursion's shapes, with float32 results within ~1e-6 relative of it
(benchmarks/fast_route.py). Float32 only; anything else, or a build without oneDNN, uses
``torch.nn.functional.linear``. Not differentiable: used where autograd does not record.
"""

import functools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=1)
def _onednn_linear():
    """The oneDNN linear op if this build has one that agrees with F.linear, else None."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return None
    try:
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(shape, generator=gen) for shape in ((5, 7), (3, 7), (3,)))
        if not torch.allclose(op(x, w, b, "none", [], ""), F.linear(x, w, b), rtol=1e-5, atol=1e-6):
            return None
    except Exception:  # an op that exists but refuses: use torch's own
        return None
    return op


# below about a million multiply-adds oneDNN's per-call cost (~12 us here) outweighs its speed:
# F.linear measured twice as fast for (64, 32) x (32, 128), oneDNN 1.2x-2.5x faster from
# (32, 128) x (128, 512) up, with one thread or two
ONEDNN_MIN_WORK = 1 << 20


def linear(x, w, b=None):
    """``x @ w.T + b`` for 2-D ``x`` (N, I), ``w`` (O, I), ``b`` (O,) or None."""
    if _uses_onednn(x, w):
        return _onednn_linear()(x, w, b.contiguous() if b is not None else None, "none", [], "")
    return F.linear(x, w, b)


def _uses_onednn(x, w):
    return _onednn_for(x.dtype, x.device, x.shape[0], w)


def _onednn_for(dtype, device, rows, w):
    """Whether ``(rows, I) @ w.T`` (``w`` (O, I)) of this dtype and device goes through oneDNN."""
    return (dtype == torch.float32 and w.dtype == torch.float32 and device.type == "cpu"
            and rows * w.shape[0] * w.shape[1] >= ONEDNN_MIN_WORK and torch.backends.mkldnn.enabled
            and _onednn_linear() is not None)


def add_linear_(out, x, w):
    """``out += x @ w.T`` in place, a piece of rows at a time (no (N, O) temporary)."""
    rows = WEIGHT_GRADIENT_ROWS
    for start in range(0, x.shape[0], rows):
        out[start:start + rows] += linear(x[start:start + rows], w)
    return out


def matmul(a, b, out=None):
    """``a @ b`` for 2-D tensors; into ``out`` when given (returned)."""
    return right_product(b, a.shape[0], a.dtype)(a, out=out)


def right_product(b, rows, dtype=None):
    """``product(a, out=None) -> a @ b`` for a loop of many products with the same ``b`` and at
    most ``rows`` rows each (of ``dtype``, ``b``'s by default): oneDNN or ``torch.mm`` is chosen
    once, not at every step (a small layer's 1,000-step loop spent ~2 ms choosing)."""
    b_t = b.t()
    if _onednn_for(dtype or b.dtype, b.device, rows, b_t):
        op = _onednn_linear()

        def product(a, out=None):
            result = op(a, b_t, None, "none", [], "")
            return result if out is None else out.copy_(result)
    else:
        def product(a, out=None):
            return torch.mm(a, b) if out is None else torch.mm(a, b, out=out)
    return product


# rows per piece of a weight gradient: oneDNN copies each transposed piece first; pieces of this
# size keep those copies small and in cache (measured faster than one product over all rows)
WEIGHT_GRADIENT_ROWS = 1024


def weight_gradient(grads, inputs):
    """``grads.T @ inputs`` (rows of both: N): a weight's gradient, summed over pieces of rows."""
    total = None
    for start in range(0, grads.shape[0], WEIGHT_GRADIENT_ROWS):
        piece = matmul(grads[start:start + WEIGHT_GRADIENT_ROWS].t(), inputs[start:start + WEIGHT_GRADIENT_ROWS])
        total = piece if total is None else total.add_(piece)
    if total is None:  # no rows
        return grads.new_zeros(grads.shape[1], inputs.shape[1])
    return total


def weight_gradients(grads, inputs):
    """``[grads.T @ x for x in inputs]`` (None where an input is None: a weight that needs no
    gradient) as one product over the inputs side by side: two weights fed by the same gate
    gradients (W_ih and W_hh) measured 23 ms as one product against 32 ms as two ((6400, 1024)
    gradients, two (6400, 256) inputs, two threads). The inputs are put side by side one piece
    of rows at a time, so the step's peak memory grows by a piece, not by all rows. Each result
    is a contiguous tensor of its own."""
    wanted = [x for x in inputs if x is not None]
    if len(wanted) < 2:
        return [weight_gradient(grads, x) if x is not None else None for x in inputs]
    results = iter(_joint_weight_gradients(grads, wanted))
    return [next(results) if x is not None else None for x in inputs]


def _joint_weight_gradients(grads, inputs):
    total = None
    for start in range(0, grads.shape[0], WEIGHT_GRADIENT_ROWS):
        rows = slice(start, start + WEIGHT_GRADIENT_ROWS)
        piece = matmul(grads[rows].t(), torch.cat([x[rows] for x in inputs], dim=1))
        total = piece if total is None else total.add_(piece)
    if total is None:  # no rows
        return [grads.new_zeros(grads.shape[1], x.shape[1]) for x in inputs]
    return [part.contiguous() for part in total.split([x.shape[1] for x in inputs], dim=1)]


def column_sums(values):
    """``values.sum(0)`` as one matrix-vector product (a bias's gradient): measured 2x faster
    than the reduction for (6400, 1024) float32 here."""
    if values.dtype != torch.float32 or values.device.type != "cpu":
        return values.sum(0)
    return values.new_ones(values.shape[0]) @ values
