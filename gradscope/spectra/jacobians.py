"""State Jacobians along a trajectory and the Lyapunov spectrum.

The state of a step is ``h`` for RNN and GRU and, for LSTM, the joint state
``torch.cat([h, c], -1)`` (size ``P + H``, P = ``proj_size`` or H): both ``h`` and ``c`` are
carried to the next step, so ``d state_{t+1} / d state_t`` is the full (P+H) x (P+H) map
``[[dh'/dh, dh'/dc], [dc'/dh, dc'/dc]]``, whose ``dc'/dc = diag(f)`` block is the forget-gate
path of DESIGN.md.

Lyapunov spectrum by the QR method (Engelken et al. 2020): per sequence, ``Q_0 = I`` and
``Q_t R_t = qr(J_t Q_{t-1})``; exponent i is the mean over every (sequence, step) pair of
``log|R_t[i, i]|`` (natural log per step), sorted largest first. A trajectory may be fed in
pieces: ``lyapunov_accumulate`` returns a ``LyapunovState`` that the next call continues.
"""

from dataclasses import dataclass

import torch

from gradscope.cells import step_function

# bytes the largest intermediate of one vmap(jacrev) chunk may take (auto chunk size)
CHUNK_BYTES = 256 * 2 ** 20


def _detached(weights):
    return {key: (value.detach() if isinstance(value, torch.Tensor) else value)
            for key, value in weights.items()}


def _auto_chunk(xw, state):
    per_row = state.shape[-1] * max(state.shape[-1], xw.shape[-1]) * state.element_size() * 4
    return max(1, CHUNK_BYTES // max(per_row, 1))


def state_jacobians(kind, weights, xw, prev_state, chunk=None):
    """``d state_{t+1} / d state_t`` for each row: a tensor (N, S, S).

    ``kind``: ``RNN_TANH``, ``RNN_RELU``, ``GRU`` or ``LSTM``; ``weights``: the dict of
    ``gradscope.cells.module_weights`` (detached here: nothing joins the model's graph);
    ``xw`` (N, G*H): the step's input projections ``x_t @ W_ih^T + b_ih``; ``prev_state`` (N, S):
    the state before the step (LSTM: ``cat([h, c], -1)``, S = P + H). Computed with
    ``torch.func.jacrev`` of the step summed over rows: rows never mix, so the derivative of
    ``sum_m step(s_m)`` by ``s_n`` is row n's own Jacobian, and S batched backward passes replace
    N*S single-row ones (the same numbers as ``vmap`` over rows of ``jacrev``, 1.5-8x faster on
    CPU). ``chunk`` rows at a time (default: as many as keep one chunk's intermediates under
    ``CHUNK_BYTES``), in the inputs' dtype and device.
    """
    if xw.dim() != 2 or prev_state.dim() != 2 or xw.shape[0] != prev_state.shape[0]:
        raise ValueError(f"xw (N, G*H) and prev_state (N, S) must be 2-D with the same N, got "
                         f"{tuple(xw.shape)} and {tuple(prev_state.shape)}")
    step = step_function(kind, _detached(weights))

    def summed(xw_rows, state_rows):
        return step(xw_rows, state_rows).sum(0)
    jacobian = torch.func.jacrev(summed, argnums=1)  # (S_out, rows, S_in)
    xw, prev_state = xw.detach(), prev_state.detach()
    chunk = chunk or _auto_chunk(xw, prev_state)
    rows = prev_state.shape[0]
    if rows == 0:
        size = prev_state.shape[1]
        return prev_state.new_zeros(0, size, size)
    with torch.no_grad():  # the transform still differentiates; no graph is kept outside it
        parts = [jacobian(xw[i:i + chunk], prev_state[i:i + chunk]).transpose(0, 1)
                 for i in range(0, rows, chunk)]
    return torch.cat(parts, 0)


def spectral_norms(jacobians):
    """Largest singular value of each (S, S) matrix of ``jacobians`` (N, S, S): a tensor (N,),
    NaN for a matrix holding NaN or Inf.

    ``sqrt(lambda_max(J^T J))`` by a batched symmetric eigensolver, about twice as fast as a
    batched SVD; the top of the spectrum is perfectly conditioned, so the relative error stays
    at the dtype's rounding (~1e-7 in float32).
    """
    jacobians = jacobians.detach()
    norms = torch.full(jacobians.shape[:1], float("nan"), dtype=jacobians.dtype,
                       device=jacobians.device)
    finite = torch.isfinite(jacobians).flatten(1).all(1)
    if jacobians.shape[-1] == 0:
        return norms.zero_()
    good = jacobians[finite]
    if len(good):
        top = torch.linalg.eigvalsh(good.mT @ good)[:, -1]
        norms[finite] = top.clamp_min(0).sqrt()
    return norms


@dataclass(frozen=True)
class LyapunovState:
    """A Lyapunov sum in progress.

    ``frames`` (R, S, S), float64: the current orthonormal frame ``Q`` of each sequence row seen
    so far (row i is sequence i of the batch); ``log_sums`` (S,), float64: per index, the sum of
    ``log|R[i, i]|`` over every (sequence, step) pair so far; ``pairs``: how many pairs.
    """
    frames: torch.Tensor
    log_sums: torch.Tensor
    pairs: int


def lyapunov_accumulate(jacobian_steps, state=None):
    """Advance the QR method by some steps; returns the new ``LyapunovState`` (``state`` is not
    changed).

    ``jacobian_steps``: in processing order, tensors (B_t, S, S) of ``d state_{t+1} / d state_t``
    for the active sequences, which are always a prefix [0, B_t) of the batch rows: B_t may
    shrink (packed forward) or grow (packed reverse); a row seen for the first time starts from
    ``Q = I``. Rows not active at a step keep their frame. Computed in float64 on the
    Jacobians' device.
    """
    frames = log_sums = None
    pairs = 0
    if state is not None:
        frames, log_sums, pairs = state.frames, state.log_sums, state.pairs
    for jac in jacobian_steps:
        if jac.dim() != 3 or jac.shape[1] != jac.shape[2]:
            raise ValueError(f"each Jacobian step must be (B, S, S), got {tuple(jac.shape)}")
        jac = jac.detach().to(torch.float64)
        active, size = jac.shape[0], jac.shape[1]
        if active == 0:
            continue
        if frames is None:
            frames = jac.new_zeros(0, size, size)
            log_sums = jac.new_zeros(size)
        if size != frames.shape[1]:
            raise ValueError(f"state size changed from {frames.shape[1]} to {size}")
        frames, log_sums = frames.to(jac.device), log_sums.to(jac.device)
        if active > frames.shape[0]:  # rows seen for the first time start from the identity
            fresh = torch.eye(size, dtype=jac.dtype, device=jac.device)
            fresh = fresh.expand(active - frames.shape[0], size, size)
            frames = torch.cat([frames, fresh], 0)
        q, r = torch.linalg.qr(jac @ frames[:active])
        log_sums = log_sums + torch.log(r.diagonal(dim1=-2, dim2=-1).abs()).sum(0)
        frames = torch.cat([q, frames[active:]], 0)
        pairs += active
    if frames is None:
        return state
    return LyapunovState(frames=frames, log_sums=log_sums, pairs=pairs)


def lyapunov_finish(state):
    """The exponents (S,), float64, largest first: ``log_sums / pairs`` sorted. NaN-filled for a
    state that saw no pair; None for no state at all."""
    if state is None:
        return None
    if state.pairs == 0:
        return torch.full_like(state.log_sums, float("nan"))
    exponents = state.log_sums / state.pairs
    return torch.sort(exponents, descending=True).values


def lyapunov_finish_many(states):
    """The exponents of several trajectories of the same map pooled (e.g. the separate calls of
    one module in a step): every (sequence, step) pair of every state weighs the same. None
    entries are skipped; None when nothing is left."""
    states = [s for s in states if s is not None]
    if not states:
        return None
    total = sum(s.log_sums.to("cpu") for s in states)
    return lyapunov_finish(LyapunovState(frames=states[0].frames, log_sums=total,
                                         pairs=sum(s.pairs for s in states)))


def lyapunov_spectrum(jacobian_steps):
    """Lyapunov exponents (S,) of one trajectory given whole: see ``lyapunov_accumulate``."""
    return lyapunov_finish(lyapunov_accumulate(jacobian_steps))
