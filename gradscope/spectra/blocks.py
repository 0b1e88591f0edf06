"""Recurrent weight blocks and their spectra.

Two routes give the same summary numbers (``rows, cols, sigma_max, sigma_min, spectral_radius,
stable_rank, frobenius``):

- full: every singular value and eigenvalue from LAPACK in float64 (numpy ``svd`` / ``eigvals``).
  Exact, and what ``spectrum()`` shows, but the eigendecomposition of a non-symmetric
  1024 x 1024 matrix alone takes about a second on two CPU cores.
- fast: only the extreme values, each by an iterative method (``gradscope.krylov``) that checks
  its own error bound in float64 (``TOLERANCE``, relative) and hands the block to the full route
  when the check fails. The Gram ``G = W^T W`` is formed once per gate in float32 and the
  stacked block's Gram is their sum. Each end of a Gram's spectrum is a soft edge, found by
  shift and invert: a short Lanczos run places a shift just beyond the end, a Cholesky factor
  proves it lies beyond every eigenvalue, Lanczos on the inverse singles the end out, and the
  Ritz vector gets a float64 Rayleigh quotient with the exact ``W`` (a float64 Gram backs up a
  float32 one that cannot vouch). That gives sigma_max of every block and sigma_min of the tall
  ``all``; sigma_min of a square block comes from Lanczos on ``(W^T W)^{-1}`` through an LU of
  ``W^T``. The spectral radius comes from Arnoldi on ``B = W^8`` and ``B^T`` (three squarings
  lift the top out of a crowded disk of eigenvalues), closed by a two-sided Rayleigh quotient of
  ``W`` in float64. Exact shortcuts first: every |eigenvalue| lies in
  ``[sigma_min, sigma_max]``, and a symmetric block has ``spectral_radius = sigma_max``.

``full="auto"`` takes the full route for blocks whose smaller side is at most
``FULL_SPECTRUM_MAX`` (cheap there) and the fast route above it. docs/spectra.md gives the
accuracy, the fallbacks and the measured costs.
"""

import math

import numpy as np
import torch

from gradscope.spectra import krylov
from gradscope.cells import GATES

FULL_SPECTRUM_MAX = 256
# relative accuracy every fast-route value must reach before it is accepted
TOLERANCE = 1e-7
# ill-conditioned blocks: the Gram route loses precision like cond^2, use the full route instead
GRAM_CONDITION_LIMIT = 1e4
# near-isometries (orthogonal weights in float32): all singular values within ~1e-6 of each other
# and all |eigenvalues| between them; no iterative method resolves such a cluster cheaply
ISOMETRY_SPREAD = 1e-4


# --- the blocks -----------------------------------------------------------------------------

def recurrent_blocks(kind, weights, dtype=None):
    """The recurrent maps of one layer and direction, as ``[(gate, matrix), ...]``.

    ``kind`` is ``RNN_TANH``, ``RNN_RELU``, ``GRU`` or ``LSTM``; ``weights`` the dict of
    ``gradscope.cells.module_weights`` (``w_hh`` and, with ``proj_size``, ``w_hr``; the others are
    not used). One entry per gate (``hh``; ``r z n``; ``i f g o``, the row blocks of ``w_hh`` in
    PyTorch's order), then ``all``:

    - without projection, gate ``g``'s map is its row block of ``w_hh`` (H x H) and ``all`` is
      ``w_hh`` itself (G*H x H);
    - with projection (LSTM ``proj_size`` P), the state fed back is ``h = w_hr @ (o * tanh(c))``,
      so gate ``g``'s map is ``w_hr @ w_hh[g]`` (P x P) and ``all`` stacks those maps (4P x P).

    A single-gate RNN gives ``[("hh", w_hh), ("all", w_hh)]``: the same matrix twice, so that
    every module has an ``all`` row. Matrices are detached and on the weights' device, in
    ``dtype`` when given (the projection products are then formed in it) else as stored.
    """
    if kind not in GATES:
        raise ValueError(f"unknown cell kind {kind!r}; expected one of {sorted(GATES)}")
    w_hh = weights.get("w_hh")
    if w_hh is None:
        raise ValueError("weights has no 'w_hh': pass the dict of gradscope.cells.module_weights")
    w_hh = w_hh.detach().to(dtype or w_hh.dtype)
    w_hr = weights.get("w_hr")
    gates = GATES[kind]
    rows = w_hh.shape[0] // len(gates)
    if rows * len(gates) != w_hh.shape[0]:
        raise ValueError(f"w_hh has {w_hh.shape[0]} rows, not a multiple of {len(gates)} gates")
    maps = [w_hh[i * rows:(i + 1) * rows] for i in range(len(gates))]
    if w_hr is not None:
        w_hr = w_hr.detach().to(w_hh.dtype)
        maps = [w_hr @ m for m in maps]
        stacked = torch.cat(maps, dim=0)
    else:
        stacked = w_hh
    return list(zip(gates, maps)) + [("all", stacked)]


# --- the full route -------------------------------------------------------------------------

def _as_float64(matrix):
    if isinstance(matrix, np.ndarray):
        return np.asarray(matrix, dtype=np.float64)
    return matrix.detach().to(device="cpu", dtype=torch.float64).numpy()


def full_spectrum(matrix):
    """Every singular value and eigenvalue of ``matrix``, in float64 by LAPACK.

    ``singular_values``: float64, descending. ``eigenvalues``: complex128, by decreasing modulus
    (then by angle, so the order is reproducible); empty for a non-square matrix. A matrix holding
    NaN or Inf gives empty arrays.
    """
    w = _as_float64(matrix)
    if w.size == 0 or not np.isfinite(w).all():
        return {"singular_values": np.zeros(0), "eigenvalues": np.zeros(0, dtype=np.complex128)}
    singular = np.linalg.svd(w, compute_uv=False).astype(np.float64)
    if w.shape[0] == w.shape[1]:
        eig = np.linalg.eigvals(w).astype(np.complex128)
        eig = eig[np.lexsort((-np.angle(eig), -np.abs(eig)))]
    else:
        eig = np.zeros(0, dtype=np.complex128)
    return {"singular_values": singular, "eigenvalues": eig}


def _summary_from_spectrum(shape, singular, eig, frobenius):
    rows, cols = int(shape[0]), int(shape[1])
    if rows * cols == 0 or len(singular) == 0:
        return _nan_summary(shape)
    sigma_max = float(singular[0])
    radius = float(np.abs(eig).max()) if rows == cols else math.nan
    return {
        "rows": rows, "cols": cols, "sigma_max": sigma_max, "sigma_min": float(singular[-1]),
        "spectral_radius": radius, "stable_rank": _stable_rank(frobenius, sigma_max),
        "frobenius": float(frobenius),
    }


def _stable_rank(frobenius, sigma_max):
    # ||W||_F^2 / sigma_max^2 (the ratio first: squares under- or overflow at extreme scales);
    # undefined (NaN) for the zero matrix
    return (float(frobenius) / sigma_max) ** 2 if sigma_max > 0 else math.nan


def _power_of_two(w):
    """The power of two at or just above the largest |entry| of a finite, non-empty float64
    ``w`` (1 for the zero matrix). Dividing by it is exact and brings the entries into
    [-1, 1], so that no square, norm or float32 product over- or underflows."""
    if isinstance(w, np.ndarray):
        largest = float(np.max(np.abs(w)))
    else:
        largest = _largest_entry(w)
    return math.ldexp(1.0, math.frexp(largest)[1]) if largest > 0 else 1.0


def _largest_entry(w):
    """The largest |entry| of a non-empty tensor; NaN when any entry is NaN. ``aminmax`` reads
    it in one pass, about six times faster than ``vector_norm(w, inf)`` on CPU."""
    low, high = torch.stack(torch.aminmax(w)).tolist()
    return math.nan if math.isnan(low) or math.isnan(high) else max(-low, high) + 0.0  # no -0.0


def _scaled_summary(summary, scale):
    """Summary columns of ``scale * W`` from those of ``W``."""
    scaled = dict(summary)
    for key in ("sigma_max", "sigma_min", "spectral_radius", "frobenius"):
        scaled[key] = summary[key] * scale
    return scaled


def _nan_summary(shape):
    rows, cols = int(shape[0]), int(shape[1])
    nan = math.nan
    return {"rows": rows, "cols": cols, "sigma_max": nan, "sigma_min": nan,
            "spectral_radius": nan, "stable_rank": nan, "frobenius": nan}


def block_spectrum(matrix):
    """The full spectrum of one block: the summary columns (``rows, cols, sigma_max, sigma_min,
    spectral_radius, stable_rank, frobenius``; ``spectral_radius`` is the largest |eigenvalue|,
    NaN for a non-square block; ``stable_rank`` is ``frobenius^2 / sigma_max^2``) plus
    ``singular_values`` (float64, descending) and ``eigenvalues`` (complex128, empty for a
    non-square block), all from LAPACK in float64. NaN or Inf in the matrix: NaN columns and empty
    arrays."""
    w = _as_float64(matrix)
    if w.size == 0 or not np.isfinite(w).all():
        return {**_nan_summary(w.shape), **full_spectrum(w)}
    scale = _power_of_two(w)
    unit = w / scale
    spectrum = full_spectrum(unit)
    summary = _summary_from_spectrum(w.shape, spectrum["singular_values"],
                                     spectrum["eigenvalues"], float(np.linalg.norm(unit)))
    return {**_scaled_summary(summary, scale),
            "singular_values": spectrum["singular_values"] * scale,
            "eigenvalues": spectrum["eigenvalues"] * scale}


# --- the fast route --------------------------------------------------------------------------

def _squaring_dtype(w):
    # float32 products halve the cost on CPU; they are only trusted with IEEE float32 matmuls
    # (no TF32 / bfloat16 shortcuts), and the float64 Rayleigh quotients check them anyway
    if w.device.type == "cpu" and torch.get_float32_matmul_precision() == "highest":
        return torch.float32
    return torch.float64


def gram_matrix(w):
    """``W^T W`` of a tall or square block, in ``_squaring_dtype`` (what the fast route factors).
    The Gram of rows stacked from several blocks is the sum of theirs, so ``spectra_records``
    forms each gate's once and adds them up for ``all``."""
    low = w.to(_squaring_dtype(w))
    return low.T @ low


def _plausible_gram(gram, frobenius_squared):
    """Whether a Gram formed elsewhere (in float32, before rescaling) is finite and has the
    block's trace, ``||W||_F^2``: one that over- or underflowed is formed again."""
    trace = gram.diagonal().sum(dtype=torch.float64).item()
    return math.isfinite(trace) and abs(trace - frobenius_squared) <= 1e-4 * frobenius_squared


def _sigma_extremes(w, frobenius, gram=None):
    """(sigma_max, sigma_min) of a tall or square float64 ``w`` whose Frobenius norm is
    ``frobenius``, or None when the fast route cannot vouch for them. ``gram``:
    ``gram_matrix(w)`` when already formed."""
    gen = krylov.generator()
    rows, cols = w.shape
    mean = frobenius ** 2 / cols  # mean of sigma^2
    cluster = mean * (1 + ISOMETRY_SPREAD)
    if gram is None or not _plausible_gram(gram, mean * cols):
        gram = gram_matrix(w)

    def exact(x):
        return w.T @ (w @ x)

    if rows == cols:
        top = _square_top(w, gram, exact, gen, cluster)
        low = None if top is None else _square_bottom(w, gen)
    else:
        top, low = _gram_ends(w, gram, exact, gen, cluster)
        if (top is None or low is None) and gram.dtype != w.dtype:
            # the rounded Gram lost the bottom (an ill-conditioned block): the exact one
            top, low = _gram_ends(w, w.T @ w, exact, gen, cluster)
    if top is None or low is None or not (top > 0 and low > 0):
        return None
    sigma_max, sigma_min = math.sqrt(top), math.sqrt(low)
    if rows != cols and sigma_max / sigma_min > GRAM_CONDITION_LIMIT:
        return None  # the Gram squared the condition number: too few digits left at the bottom
    return sigma_max, sigma_min


# Lanczos on an inverse: its top stands well apart, so narrow blocks and an early first check
# reach it in fewer steps (each costs two triangular solves, whatever the width)
_INVERSE_RUN = {"block": 4, "first_check": 2}


def _rounded(gram, like):
    """``x -> G x`` with the products in the Gram's dtype and the result in ``like``'s."""
    return lambda x: (gram @ x.to(gram.dtype)).to(like.dtype)


def _square_top(w, gram, exact, gen, cluster):
    """sigma_max^2 of a square float64 ``w``: shift and invert on its Gram; else Lanczos on the
    Gram with a float64 check; else a float64 run; None when no run can vouch for it."""
    estimate = _short_run(w, gram, gen, cluster)
    if estimate is not None:
        value = _shift_invert(w, gram, exact, 1.05 * estimate[1], above=True, gen=gen)
        if value is not None:
            return value
    if gram.dtype != w.dtype:
        found = krylov.lanczos_extremes(_rounded(gram, w), w.shape[1], w, gen, tolerance=1e-6,
                                        give_up_below=cluster)
        if found is None:
            return None
        value = krylov.polished(exact, found[0], TOLERANCE)
        if value is not None:
            return value
    found = krylov.lanczos_extremes(exact, w.shape[1], w, gen, TOLERANCE, give_up_below=cluster)
    return None if found is None else found[0][0]


def _short_run(w, gram, gen, cluster, max_dim=48):
    """Ritz values from a short Lanczos run on the Gram, ``(lowest, largest)``: both lie inside
    the Gram's spectrum (interlacing), the largest just below sigma_max^2. None when the run is
    too small to tell, not finite, or the top is a near-isometry's cluster."""
    values = krylov.ritz_values(_rounded(gram, w), w.shape[1], w, gen, max_dim=max_dim)
    if len(values) < 2:
        return None
    lowest, largest = values[0].item(), values[-1].item()
    if not (math.isfinite(lowest) and math.isfinite(largest) and largest > cluster):
        return None  # a near-isometry: left to the plain runs, which give up the same way
    return lowest, largest


def _shift_invert(w, gram, exact, shift, above, gen):
    """The top (``above``) or bottom eigenvalue of the Gram ``W^T W`` by shift and invert, or
    None.

    The ends of a Gram's spectrum are soft edges: plain Lanczos needs about 200 steps to resolve
    one. ``shift I - G`` (top) or ``G - shift I`` (bottom) has a Cholesky factor only if the
    shift lies beyond every eigenvalue on that side (else None); Lanczos on its inverse, products
    in the Gram's dtype, singles out ``1 / |shift - lambda|`` in a few dozen steps. From a
    float64 Gram that value is the answer; from a rounded (float32) one the Ritz vector gets the
    float64 Rayleigh quotient of the exact operator, with the Ritz gap of the inverse mapped back
    to the Gram (``krylov.polished``).
    """
    matrix = gram.neg() if above else gram.clone()  # a fresh buffer, factored in place
    matrix.diagonal().add_(shift if above else -shift)
    factor = _cholesky(matrix)
    if factor is None:
        return None  # the shift is not beyond that end of the spectrum

    def inverse(x):  # two triangular solves: about twice as fast as cholesky_solve here
        half = torch.linalg.solve_triangular(factor, x.to(gram.dtype), upper=False)
        return torch.linalg.solve_triangular(factor.mT, half, upper=True).to(w.dtype)
    found = krylov.lanczos_extremes(inverse, gram.shape[0], w, gen, tolerance=1e-9,
                                    **_INVERSE_RUN)
    if found is None:
        return None
    mu, vector, gap = found[0]
    below = mu - gap  # the next Ritz value of the inverse
    if not (mu > 0 and below > 0):
        return None
    if gram.dtype == w.dtype:
        # a float64 Gram: Lanczos vouched for 1 / |shift - lambda| to 1e-9, which holds lambda
        # to better than that (|shift - lambda| <= lambda here)
        return shift - 1.0 / mu if above else shift + 1.0 / mu
    return krylov.polished(exact, (None, vector, 1.0 / below - 1.0 / mu), TOLERANCE)


def _cholesky(matrix, block=256):
    """The lower Cholesky factor of a symmetric ``matrix`` (overwritten), or None when it is not
    positive definite. Blocked by hand: ``torch.linalg.cholesky_ex`` spends more time zeroing
    the upper triangle of its column-major result than LAPACK spends factoring a 1024 x 1024
    matrix; on diagonal blocks of ``block`` rows that costs little."""
    n = matrix.shape[0]
    for start in range(0, n, block):
        end = min(start + block, n)
        diagonal, info = torch.linalg.cholesky_ex(matrix[start:end, start:end])
        if info.item() != 0:
            return None
        matrix[start:end, start:end] = diagonal
        if end < n:
            panel = torch.linalg.solve_triangular(diagonal.mT, matrix[end:, start:end],
                                                  upper=True, left=False)
            matrix[end:, start:end] = panel
            matrix[end:, end:].sub_(panel @ panel.mT)
    return matrix.tril_()


def _square_bottom(w, gen):
    """sigma_min^2 of a square float64 ``w``, or None. The smallest singular values of a square
    matrix crowd near 0; Lanczos on ``(W^T W)^{-1}`` through an LU of ``W`` finds the smallest in
    a few steps, with no squared condition number."""
    # the LU of M = W^T: its input is then column-major, which LAPACK takes without a transposing
    # copy (a quarter of the cost)
    lu, pivots, info = torch.linalg.lu_factor_ex(w.mT)
    if info.item() != 0:
        return None  # exactly singular: LAPACK's SVD says how close to zero

    def inverse(x):  # (W^T W)^{-1} x = W^{-1} W^{-T} x = M^{-T} M^{-1} x
        return torch.linalg.lu_solve(lu, pivots, torch.linalg.lu_solve(lu, pivots, x),
                                     adjoint=True)
    found = krylov.lanczos_extremes(inverse, w.shape[1], w, gen, TOLERANCE, **_INVERSE_RUN)
    if found is None or not found[0][0] > 0:
        return None
    return 1.0 / found[0][0]


def _gram_ends(w, gram, exact, gen, cluster):
    """(sigma_max^2, sigma_min^2) of a tall float64 ``w`` by shift and invert at both ends of its
    Gram (each value None when not vouched for). The bottom shift comes from the lowest Ritz value
    of a short run, which lies above sigma_min^2 and after 64 steps within about 15 % of it;
    a shift that overshoots has no Cholesky factor, and a lower one is tried, down to 0 (the
    plain inverse)."""
    ends = _short_run(w, gram, gen, cluster, max_dim=64)
    if ends is None:
        return None, None
    lowest, largest = ends
    top = _shift_invert(w, gram, exact, 1.05 * largest, above=True, gen=gen)
    if top is None:
        return None, None
    for shift in (0.85 * lowest, 0.6 * lowest, 0.0):
        low = _shift_invert(w, gram, exact, shift, above=False, gen=gen)
        if low is not None:
            return top, low
    return top, None


def _dominant_eigenvalue(w, sigma_max, squarings=3, sizes=(40, 48, 56, 64, 90, 135, 200)):
    """The largest |eigenvalue| of a square float64 ``w``, or None when not vouched for.

    ``B = w^(2^squarings)`` maps each eigenvalue to ``lambda^(2^squarings)``, so the top of the
    spectrum stands out from a crowded disk; Arnoldi on ``B`` and on ``B^T`` then finds the dominant right and left invariant subspaces in a few dozen products, and
    ``krylov.two_sided_top`` the top eigenvalue of ``w`` with its error bound. Accepted when that
    bound is below ``TOLERANCE`` (relative), else the Krylov spaces grow through ``sizes``.
    """
    n = w.shape[0]
    power = w.to(_squaring_dtype(w), copy=True)  # scaled in place below: never w itself
    spare = torch.empty_like(power)
    for _ in range(squarings):  # in place: fresh 1024 x 1024 buffers cost page faults here
        power.div_(torch.linalg.matrix_norm(power))
        torch.mm(power, power, out=spare)
        power, spare = spare, power
    scale = torch.linalg.matrix_norm(power).item()
    if not (math.isfinite(scale) and scale > 0):
        return None  # nilpotent to working precision, or overflow: leave it to LAPACK
    power.div_(scale)
    gen, largest = krylov.generator(), min(max(sizes), n)
    right = krylov.Arnoldi(power, w, krylov.random((n,), w, gen), largest)
    left = krylov.Arnoldi(power.T, w.T, krylov.random((n,), w, gen), largest)
    for size in sorted({min(s, n) for s in sizes}):
        value = krylov.two_sided_top(right.extend(size), left.extend(size), sigma_max, TOLERANCE,
                                     gen)
        if value is not None:
            return value
    return None


def _radius_shortcut(w, sigma_max, sigma_min):
    """The spectral radius where it follows from the singular values at no cost: every
    |eigenvalue| lies in [sigma_min, sigma_max], and a symmetric matrix has |eigenvalues| equal to
    its singular values (a skew part K moves both by at most ||K||)."""
    if sigma_max - sigma_min <= TOLERANCE * sigma_max:
        return sigma_max
    # ||K v|| / ||v|| <= ||K||: a random probe rules out most non-symmetric blocks without
    # forming K = W - W^T
    probe = krylov.random((w.shape[0], 1), w, krylov.generator())
    if (torch.linalg.vector_norm(w @ probe - w.T @ probe)
            > TOLERANCE * sigma_max * torch.linalg.vector_norm(probe)):
        return None
    skew = torch.linalg.matrix_norm(w - w.T).item()
    if skew <= TOLERANCE * sigma_max:
        return sigma_max
    return None


def _fast_summary(w, frobenius, gram=None):
    """Summary columns of a finite float64 ``w`` by the fast route; None where a value could not
    be vouched for (the caller takes the full route for that block). ``gram``: ``gram_matrix``
    of the tall orientation of ``w`` when already formed."""
    rows, cols = w.shape
    extremes = _sigma_extremes(w if rows >= cols else w.T, frobenius, gram)
    if extremes is None:
        return None
    sigma_max, sigma_min = extremes
    radius = math.nan
    if rows == cols:
        radius = _radius_shortcut(w, sigma_max, sigma_min)
        if radius is None:
            radius = _dominant_eigenvalue(w, sigma_max)
        if radius is None:
            return None
    return {"rows": int(rows), "cols": int(cols), "sigma_max": sigma_max, "sigma_min": sigma_min,
            "spectral_radius": radius, "stable_rank": _stable_rank(frobenius, sigma_max),
            "frobenius": frobenius}


# --- one block, either route ----------------------------------------------------------------

def _wants_full(shape, full):
    if full == "auto":
        return min(shape) <= FULL_SPECTRUM_MAX
    if isinstance(full, bool):
        return full
    raise ValueError(f"full must be True, False or 'auto', not {full!r}")


def _to_float64(matrix):
    if isinstance(matrix, np.ndarray):
        # a contiguous copy where needed: torch refuses numpy's negative strides (np.flip)
        return torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float64))
    return matrix.detach().to(torch.float64)


def block_summary(matrix, full="auto", gram=None, fallback=True):
    """The summary columns of one block (see ``block_spectrum``) and, when taken, the full
    spectrum: returns ``(summary, spectrum_or_None)``.

    ``full``: True computes every singular value and eigenvalue (LAPACK, exact); False takes the
    fast route (extreme values only; see the module docstring), which falls back to LAPACK for a
    block it cannot vouch for; ``"auto"`` takes the full route when ``min(rows, cols) <=
    FULL_SPECTRUM_MAX``. ``gram``: the block's ``gram_matrix`` (of its tall orientation) when
    already formed; the fast route then skips that product. ``fallback=False``: None instead of
    that fallback, for a caller that runs LAPACK elsewhere (``gradscope.spectra.workers``).
    """
    w = _to_float64(matrix)
    if w.numel() == 0:
        return _nan_summary(w.shape), None
    largest = _largest_entry(w)  # NaN or Inf anywhere shows here
    if not math.isfinite(largest):
        return _nan_summary(w.shape), None
    if not _wants_full(w.shape, full):
        # entries far from 1 over- or underflow in float32 Grams and float64 squares: such a
        # block is worked on as an exactly rescaled copy, entries in [-1, 1]
        scale = 1.0 if 2.0 ** -30 < largest < 2.0 ** 30 else _power_of_two(w)
        unit = (w / scale if scale != 1.0 else w).contiguous()
        if gram is not None and scale != 1.0:
            gram = gram / scale ** 2  # exact; checked against the block before use
        summary = _fast_summary(unit, torch.linalg.vector_norm(unit).item(), gram)
        if summary is not None:
            return _scaled_summary(summary, scale), None
        if not fallback:
            return None
    spectrum = block_spectrum(w)
    summary = {key: spectrum[key] for key in
               ("rows", "cols", "sigma_max", "sigma_min", "spectral_radius", "stable_rank",
                "frobenius")}
    return summary, {"singular_values": spectrum["singular_values"],
                     "eigenvalues": spectrum["eigenvalues"]}


# --- records --------------------------------------------------------------------------------

def _value_record(step, module, layer, direction, gate, spectrum):
    eig = spectrum["eigenvalues"]
    return {"step": step, "module": module, "layer": layer, "direction": direction, "gate": gate,
            "singular_values": spectrum["singular_values"].tolist(),
            "eigenvalues_real": eig.real.tolist(), "eigenvalues_imag": eig.imag.tolist()}


def spectrum_value(step, module, layer, direction, gate, matrix):
    """One ``values`` record (see ``spectra_records``) computed now, by the full route: for a
    ``spectrum()`` asked about a block whose record was made with the fast route."""
    return _value_record(step, module, layer, direction, gate, full_spectrum(matrix))


def spectra_records(step, module, layer, direction, kind, weights, full="auto"):
    """Spectra of one layer and direction of a stock module.

    Returns ``(rows, values)``. ``rows``: one dict per block of ``recurrent_blocks(kind,
    weights)`` with the columns of ``gradscope.records.SPECTRA_COLUMNS``. ``values``: one dict
    ``{"step", "module", "layer", "direction", "gate", "singular_values", "eigenvalues_real",
    "eigenvalues_imag"}`` (plain lists) for each block whose full spectrum was computed (all of
    them with ``full=True``; none with ``full=False``; the small ones with ``"auto"``).

    Weights are detached and never modified. The heavy products run on the weights' device.
    """
    blocks = recurrent_blocks(kind, weights, dtype=torch.float64)
    grams = _shared_grams(blocks, full)
    summaries, done = {}, {}
    for gate, matrix in blocks:
        key = (matrix.data_ptr(), tuple(matrix.shape), tuple(matrix.stride()))
        if key not in done:  # RNN: "hh" and "all" are the same matrix
            done[key] = block_summary(matrix, full=full, gram=grams.get(gate))
        summaries[gate] = done[key]
    return part_records(step, module, layer, direction, summaries)


def part_records(step, module, layer, direction, summaries):
    """``(rows, values)`` of one layer and direction (see ``spectra_records``) from
    ``{gate: block_summary(...)}`` in the blocks' order."""
    rows, values = [], []
    for gate, (summary, spectrum) in summaries.items():
        rows.append({"step": step, "module": module, "layer": layer, "direction": direction,
                     "gate": gate, **summary})
        if spectrum is not None:
            values.append(_value_record(step, module, layer, direction, gate, spectrum))
    return rows, values


def _shared_grams(blocks, full):
    """Gram matrices for the fast route, by gate: each gate's, and for ``all`` (its rows are the
    gates' rows stacked) their sum, which saves forming the tall block's Gram. Empty when the
    blocks take the full route or there is only one gate."""
    gates = blocks[:-1]
    if not shares_grams(blocks, full):
        return {}
    grams = {gate: gram_matrix(matrix) for gate, matrix in gates}
    return {**grams, "all": stacked_gram(grams.values())}


def shares_grams(blocks, full):
    """Whether the blocks of a part (``recurrent_blocks``) take the fast route with the gates'
    Grams summed for ``all``: two or more gates, large enough for the fast route."""
    return len(blocks) > 2 and not _wants_full(blocks[-1][1].shape, full)


def stacked_gram(grams):
    """The Gram of the gates' rows stacked: the sum of theirs, added in the gates' order."""
    grams = list(grams)
    stacked = torch.zeros_like(grams[0])
    for gram in grams:
        stacked.add_(gram)
    return stacked


def labelled_records(step, label, matrix, full="auto"):
    """Spectra of a user-given weight (``watch(..., weights={label: ...})``): one row with
    ``module = gate = label``, layer 0, direction ``forward``; returns ``(rows, values)`` like
    ``spectra_records``. ``matrix`` may be a tensor, a Parameter or a numpy array."""
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach()
    if getattr(matrix, "ndim", None) != 2:
        raise ValueError(f"weight {label!r} must be a 2-D matrix, got shape "
                         f"{tuple(getattr(matrix, 'shape', ()))}")
    summary, spectrum = block_summary(matrix, full=full)
    rows = [{"step": step, "module": label, "layer": 0, "direction": "forward", "gate": label,
             **summary}]
    values = [] if spectrum is None else [
        _value_record(step, label, 0, "forward", label, spectrum)]
    return rows, values
