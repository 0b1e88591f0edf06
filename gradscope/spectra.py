"""Recurrent weight blocks and their spectra.

Two routes give the same summary numbers (``rows, cols, sigma_max, sigma_min, spectral_radius,
stable_rank, frobenius``):

- full: every singular value and eigenvalue from LAPACK in float64 (numpy ``svd`` / ``eigvals``).
  Exact, and what ``spectrum()`` shows, but the eigendecomposition of a non-symmetric
  1024 x 1024 matrix alone takes about a second on two CPU cores.
- fast: only the extreme values, each by an iterative method that checks its own error bound in
  float64 (``TOLERANCE``, relative) and hands the block to the full route when the check fails:
  sigma_max of a square block by shift-and-invert Lanczos on ``(s I - W^T W)^{-1}`` (float32
  Cholesky, then a float64 Rayleigh quotient), else block Lanczos on ``W^T W`` (never formed;
  float32 products, then a float64 Rayleigh quotient), of a tall one by Lanczos on its Gram;
  sigma_min of a square block by Lanczos on ``(W^T W)^{-1}`` through an LU of ``W``, of a tall
  one (``all``) by Lanczos on ``(G - s I)^{-1}`` through a Cholesky factor; the spectral
  radius from Arnoldi on ``B = W^16`` and ``B^T`` (four squarings single out the top of a crowded
  disk of eigenvalues), closed by a two-sided Rayleigh quotient of ``W`` in float64. Exact
  shortcuts first: every |eigenvalue| lies in ``[sigma_min, sigma_max]``, and a symmetric block
  has ``spectral_radius = sigma_max``.

``full="auto"`` takes the full route for blocks whose smaller side is at most
``FULL_SPECTRUM_MAX`` (cheap there) and the fast route above it. docs/spectra.md gives the
accuracy, the fallbacks and the measured costs.
"""

import math

import numpy as np
import torch

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
    # ||W||_F^2 / sigma_max^2; undefined (NaN) for the zero matrix
    return float(frobenius) ** 2 / sigma_max ** 2 if sigma_max > 0 else math.nan


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
    spectrum = full_spectrum(w)
    frobenius = float(np.linalg.norm(w)) if np.isfinite(w).all() else math.nan
    summary = _summary_from_spectrum(w.shape, spectrum["singular_values"],
                                     spectrum["eigenvalues"], frobenius)
    return {**summary, **spectrum}


# --- the fast route --------------------------------------------------------------------------

def _generator():
    # a private, seeded generator: results are reproducible and the user's RNG stream is untouched
    return torch.Generator(device="cpu").manual_seed(20130101)


def _random(shape, like, gen):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(like.device, like.dtype)


def _lanczos_extremes(apply, size, like, gen, bottom=False, give_up_below=-math.inf,
                      tolerance=None, block=8, max_dim=480, ritz=None):
    """Largest (and, with ``bottom``, smallest) eigenpair of a symmetric operator
    ``apply(X) = A @ X`` of order ``size``, by block Lanczos with full reorthogonalisation.

    Returns ``[top, low]`` (``low`` only with ``bottom``), each a Ritz pair ``(value, vector,
    gap)``, or None unless every asked value passed its check. For a symmetric operator some
    eigenvalue lies within the residual norm of a Ritz value, the extreme Ritz values never pass
    the extreme eigenvalues, and a Ritz value errs by at most ``residual^2 / gap`` (Kato-Temple,
    gap to the next Ritz value): one of the two must be below ``tolerance`` (default
    ``TOLERANCE``) relative. Gives up (None) once the top Ritz value is at most
    ``give_up_below``: a cluster that no Krylov method resolves cheaply. ``ritz``, a list when
    given, receives the Ritz values (ascending, CPU) of the last check.
    """
    tolerance = TOLERANCE if tolerance is None else tolerance
    max_dim = min(max_dim, size)
    basis = like.new_empty(size, max_dim)
    images = like.new_empty(size, max_dim)
    projected = like.new_zeros(max_dim, max_dim)
    block = torch.linalg.qr(_random((size, min(block, size)), like, gen)).Q
    dim, next_check, exhausted = 0, 4 * block.shape[1], False
    while True:
        width = block.shape[1]
        image = apply(block)
        basis[:, dim:dim + width], images[:, dim:dim + width] = block, image
        # the new block's column of the projection is also the first reorthogonalisation pass
        coefficients = basis[:, :dim + width].T @ image
        projected[:dim + width, dim:dim + width] = coefficients
        projected[dim:dim + width, :dim] = projected[:dim, dim:dim + width].T
        dim += width
        if dim >= next_check or dim >= max_dim or exhausted:
            next_check = int(dim * 1.15)
            # once the Krylov space closes on itself (an invariant subspace) or fills the whole
            # space, its Ritz values are exact
            found, largest, values = _lanczos_check(projected[:dim, :dim], basis[:, :dim],
                                                    images[:, :dim], bottom, tolerance,
                                                    exact=exhausted or dim >= size)
            if ritz is not None:
                ritz[:] = [values]
            if largest is None or largest <= give_up_below:
                return None
            if all(pair is not None for pair in found):
                return found
            if dim >= max_dim or exhausted:
                return None
        keep = min(width, max_dim - dim)
        new = image[:, :keep]
        scale = torch.linalg.matrix_norm(new).item()
        # "twice is enough" for an orthogonal basis; the first pass reuses the projection
        new = new - basis[:, :dim] @ coefficients[:, :keep]
        new = new - basis[:, :dim] @ (basis[:, :dim].T @ new)
        block, r = torch.linalg.qr(new)
        exhausted = bool(r.diagonal().abs().min().item() <= 1e-12 * max(scale, 1e-300))
        if exhausted:
            next_check = dim  # check what we have, then stop
            block = block[:, :0]


def _lanczos_check(projected, basis, images, bottom, tolerance, exact):
    """The asked extreme Ritz pairs (each None when not yet vouched for) and the largest Ritz
    value (None when not finite)."""
    values, vectors = torch.linalg.eigh(((projected + projected.T) / 2).cpu())
    if not bool(torch.isfinite(values).all()):
        return [], None, values
    found = []
    for end in ([-1, 0] if bottom else [-1]):
        theta = values[end].item()
        vector = basis @ vectors[:, end].to(basis.device, basis.dtype)
        gap = abs(theta - values[-2 if end == -1 else 1].item()) if len(values) > 1 else 0.0
        if exact:
            found.append((theta, vector, gap))
            continue
        image = images @ vectors[:, end].to(basis.device, basis.dtype)
        residual = torch.linalg.vector_norm(image - theta * vector).item()
        found.append((theta, vector, gap) if _within(residual, gap, theta, tolerance) else None)
    return found, values[-1].item(), values


def _polished(apply, pair):
    """The float64 Rayleigh quotient of a Ritz vector found with a float32 operator, if its
    Kato-Temple bound (float64 residual) is within ``TOLERANCE``; else None."""
    _, vector, gap = pair
    vector = vector.unsqueeze(1) / torch.linalg.vector_norm(vector)
    image = apply(vector)
    value = (vector.T @ image).item()
    residual = torch.linalg.vector_norm(image - value * vector).item()
    return value if _within(residual, gap, value, TOLERANCE) else None


def _within(residual, gap, value, tolerance):
    """Whether a symmetric Ritz value is vouched for to ``tolerance`` relative: some eigenvalue
    lies within ``residual`` of it, and, once the residual is well below the gap to the next
    Ritz value, within ``residual^2 / gap`` (Kato-Temple)."""
    bound = tolerance * abs(value)
    return residual <= bound or (gap > 0 and residual <= 1e-3 * gap
                                 and residual ** 2 / gap <= bound)


def _sigma_extremes(w):
    """(sigma_max, sigma_min) of a tall or square float64 ``w``, or None when the fast route
    cannot vouch for them."""
    gen = _generator()
    rows, cols = w.shape
    mean = float(torch.linalg.vector_norm(w).item()) ** 2 / cols  # mean of sigma^2
    cluster = mean * (1 + ISOMETRY_SPREAD)
    if rows == cols:
        top = _square_top(w, gen, cluster)
        if top is None:
            return None
        # sigma_min sits near 0 among many small ones: Lanczos on (W^T W)^{-1} through an LU of
        # W finds it in a few steps, with no squared condition number
        lu, pivots, info = torch.linalg.lu_factor_ex(w)
        if info.item() != 0:
            return None  # exactly singular: LAPACK's SVD says how close to zero

        def inverse(x):  # (W^T W)^{-1} x = W^{-1} W^{-T} x
            return torch.linalg.lu_solve(lu, pivots,
                                         torch.linalg.lu_solve(lu, pivots, x, adjoint=True))
        found = _lanczos_extremes(inverse, cols, w, gen)
        if found is None or not found[0][0] > 0:
            return None
        low = 1.0 / found[0][0]
    else:
        # a tall stacked block: sigma_max from Lanczos on the Gram; sigma_min from Lanczos on the
        # Gram's inverse through its Cholesky factor, where the bottom of the spectrum stands
        # apart (a few steps, where the Gram's own soft bottom edge needs hundreds)
        gram = w.T @ w
        ritz = []
        found = _lanczos_extremes(lambda x: gram @ x, cols, w, gen, give_up_below=cluster,
                                  max_dim=640, ritz=ritz)
        if found is None:
            return None
        top = found[0][0]
        # shift towards the bottom: the smallest Ritz value of that run lies above the smallest
        # eigenvalue (Cauchy interlacing) and is usually close to it; a Cholesky factor of
        # G - shift I exists only for a shift below every eigenvalue (else no shift). The top of
        # (G - shift I)^{-1} is 1 / (lambda_min - shift), spread apart from the rest
        lowest = ritz[0][0].item() if ritz and len(ritz[0]) else 0.0
        shift, factor, info = 0.0, None, 1
        if math.isfinite(lowest) and lowest > 0:
            shift = 0.95 * lowest
            factor, info = torch.linalg.cholesky_ex(
                gram - shift * torch.eye(cols, dtype=gram.dtype, device=gram.device))
            info = info.item()
        if info != 0:
            shift = 0.0
            factor, info = torch.linalg.cholesky_ex(gram)
            if info.item() != 0:
                return None  # not positive definite to working precision: leave it to LAPACK
        found = _lanczos_extremes(lambda x: torch.cholesky_solve(x, factor), cols, w, gen)
        if found is None or not found[0][0] > 0:
            return None
        low = shift + 1.0 / found[0][0]
    if not (top > 0 and low > 0):
        return None
    sigma_max, sigma_min = math.sqrt(top), math.sqrt(low)
    if rows != cols and sigma_max / sigma_min > GRAM_CONDITION_LIMIT:
        return None  # the Gram squared the condition number: too few digits left at the bottom
    return sigma_max, sigma_min


def _square_top(w, gen, cluster):
    """sigma_max^2 of a square float64 ``w``: Lanczos on ``W^T W`` (never formed), its products in
    float32 where trusted (half the memory traffic), then one float64 Rayleigh quotient with its
    own error bound; a float64 run where that bound fails."""
    def exact(x):
        return w.T @ (w @ x)

    dtype = _squaring_dtype(w)
    value = _shifted_top(w, exact, dtype, gen, cluster)
    if value is not None:
        return value
    if dtype != w.dtype:
        low = w.to(dtype)

        def rounded(x):
            return (low.T @ (low @ x.to(dtype))).to(w.dtype)
        found = _lanczos_extremes(rounded, w.shape[1], w, gen, give_up_below=cluster,
                                  tolerance=1e-6)
        if found is None:
            return None
        value = _polished(exact, found[0])
        if value is not None:
            return value
    found = _lanczos_extremes(exact, w.shape[1], w, gen, give_up_below=cluster)
    return None if found is None else found[0][0]


def _shifted_top(w, exact, dtype, gen, cluster):
    """sigma_max^2 of a square float64 ``w`` by shift and invert, or None (the caller then runs
    plain Lanczos on the Gram).

    The top of the Gram's spectrum is a soft edge: plain Lanczos needs about 200 steps to resolve
    it. A short run gives a Ritz value a little below sigma_max^2 (Ritz values never pass the
    extreme eigenvalue); 5 % above it is a shift whose ``shift I - W^T W`` has a Cholesky factor
    only if the shift lies above every eigenvalue (else None). Lanczos on that operator's inverse
    (products in ``dtype``) singles out ``1 / (shift - sigma_max^2)`` in a few dozen steps; its
    Ritz vector is then checked by ``_polished`` with the exact float64 operator and the Ritz gap
    mapped back to ``W^T W``.
    """
    n = w.shape[1]
    low = w.to(dtype)
    gram = low.T @ low
    ritz = []
    _lanczos_extremes(lambda x: (gram @ x.to(dtype)).to(w.dtype), n, w, gen, max_dim=48,
                      ritz=ritz)
    if not ritz or len(ritz[0]) < 2:
        return None
    estimate = ritz[0][-1].item()
    if not (math.isfinite(estimate) and estimate > cluster):
        return None  # a near-isometry: left to the plain run, which gives up the same way
    shift = 1.05 * estimate
    factor, info = torch.linalg.cholesky_ex(
        shift * torch.eye(n, dtype=dtype, device=gram.device) - gram)
    if info.item() != 0:
        return None  # the shift is not above sigma_max^2

    def inverse(x):
        return torch.cholesky_solve(x.to(dtype), factor).to(w.dtype)
    found = _lanczos_extremes(inverse, n, w, gen, tolerance=1e-9)
    if found is None:
        return None
    mu, vector, gap = found[0]
    below = mu - gap  # the next Ritz value of the inverse
    if not (mu > 0 and below > 0):
        return None
    return _polished(exact, (None, vector, 1.0 / below - 1.0 / mu))


def _squaring_dtype(w):
    # float32 products halve the cost on CPU; they are only trusted with IEEE float32 matmuls
    # (no TF32 / bfloat16 shortcuts), and the float64 Rayleigh quotients check them anyway
    if w.device.type == "cpu" and torch.get_float32_matmul_precision() == "highest":
        return torch.float32
    return torch.float64


class _Arnoldi:
    """An orthonormal Krylov basis of ``operator`` (float64, reorthogonalised twice) grown on
    demand; the products run in the operator's dtype."""

    def __init__(self, operator, start, max_dim):
        self.operator = operator
        self.basis = start.new_zeros(start.shape[0], max_dim)
        self.basis[:, 0] = start / torch.linalg.vector_norm(start)
        self.dim = 1

    def extend(self, dim):
        while self.dim < min(dim, self.basis.shape[1]):
            basis = self.basis[:, :self.dim]
            v = (self.operator @ basis[:, -1].to(self.operator.dtype)).to(torch.float64)
            before = torch.linalg.vector_norm(v).item()
            for _ in range(2):
                v = v - basis @ (basis.T @ v)
            after = torch.linalg.vector_norm(v).item()
            if not after > 1e-13 * before:
                break  # an invariant subspace: the basis holds all it will
            self.basis[:, self.dim] = v / after
            self.dim += 1
        return self.basis[:, :self.dim]


def _dominant_eigenvalue(w, sigma_max, squarings=4, sizes=(40, 60, 90, 135, 200)):
    """The largest |eigenvalue| of a square float64 ``w``, or None when not vouched for.

    ``B = w^(2^squarings)`` maps each eigenvalue to ``lambda^(2^squarings)``, so the top of the
    spectrum stands out from a crowded disk; Arnoldi on ``B`` and on ``B^T`` then finds the
    dominant right and left invariant subspaces in a few dozen products. Rayleigh-Ritz of ``w``
    (float64) on each gives the top eigenvalue's right vector ``x`` and left vector ``y``, and the
    two-sided Rayleigh quotient ``y^T w x / y^T x``, whose error is about the product of the two
    residuals over ``|y^T x|``. Accepted when that bound is below ``TOLERANCE`` (relative), else
    the Krylov spaces grow through ``sizes``.
    """
    n = w.shape[0]
    gen = _generator()
    power = w.to(_squaring_dtype(w))
    for _ in range(squarings):
        power = power / torch.linalg.matrix_norm(power)
        power = power @ power
    scale = torch.linalg.matrix_norm(power).item()
    if not (math.isfinite(scale) and scale > 0):
        return None  # nilpotent to working precision, or overflow: leave it to LAPACK
    power = power / scale
    largest = min(max(sizes), n)
    right = _Arnoldi(power, _random((n,), w, gen), largest)
    left = _Arnoldi(power.T, _random((n,), w, gen), largest)
    for size in sorted({min(s, n) for s in sizes}):
        value = _two_sided_top(w, right.extend(size), left.extend(size), sigma_max)
        if value is not None:
            return value
    return None


def _ritz(w, basis):
    """Ritz values of ``w`` on an orthonormal ``basis`` and a function giving the unit Ritz
    vector of one of them."""
    values, small = torch.linalg.eig((basis.T @ (w @ basis)).cpu())

    def vector(index):
        coefficients = small[:, index].to(basis.device)
        v = torch.complex(basis @ coefficients.real, basis @ coefficients.imag)
        return v / torch.linalg.vector_norm(v)
    return values, vector


def _apply_real(w, v):
    """``w @ v`` for a real ``w`` and a complex vector, without a complex copy of ``w``."""
    parts = w @ torch.stack([v.real, v.imag], 1)
    return torch.complex(parts[:, 0], parts[:, 1])


def _two_sided_top(w, right_basis, left_basis, sigma_max):
    """The top eigenvalue's modulus from the right and left Ritz pairs, or None."""
    values, right_vector = _ritz(w, right_basis)
    top = int(values.abs().argmax())
    theta, x = values[top].item(), right_vector(top)
    left_values, left_vector = _ritz(w.T, left_basis)  # w^T y = mu y: y^T w = mu y^T
    # w is real, so eigenvalues pair with their conjugates: match theta or its conjugate
    distance = torch.minimum((left_values - theta).abs(), (left_values.conj() - theta).abs())
    near = int(distance.argmin())
    mu, y = left_values[near].item(), left_vector(near)
    if abs(mu.conjugate() - theta) < abs(mu - theta):
        mu, y = mu.conjugate(), y.conj()
    scale = max(abs(theta), 1e-300)
    if abs(mu - theta) > 1e-4 * scale:
        return None  # the two subspaces disagree: not converged
    wx, wty = _apply_real(w, x), _apply_real(w.T, y)
    overlap = (y @ x).item()  # y^T x, no conjugation: the left eigenvector is the row y^T
    if overlap == 0:
        return None
    estimate = abs((y @ wx).item() / overlap)
    residual_right = torch.linalg.vector_norm(wx - theta * x).item()
    residual_left = torch.linalg.vector_norm(wty - mu * y).item()
    # the two-sided Rayleigh quotient errs by about the product of the residuals over |y^T x|
    bound = residual_right * residual_left / abs(overlap)
    if not bound <= TOLERANCE * scale or abs(abs(theta) - estimate) > 1e-5 * scale:
        return None
    if estimate > sigma_max * (1 + 1e-8):
        return None  # |lambda| <= sigma_max always: something went wrong, use LAPACK
    return estimate


def _radius_shortcut(w, sigma_max, sigma_min):
    """The spectral radius where it follows from the singular values at no cost: every
    |eigenvalue| lies in [sigma_min, sigma_max], and a symmetric matrix has |eigenvalues| equal to
    its singular values (a skew part K moves both by at most ||K||)."""
    if sigma_max - sigma_min <= TOLERANCE * sigma_max:
        return sigma_max
    skew = torch.linalg.matrix_norm(w - w.T).item()
    if skew <= TOLERANCE * sigma_max:
        return sigma_max
    return None


def _fast_summary(w, frobenius):
    """Summary columns of a finite float64 ``w`` by the fast route; None where a value could not
    be vouched for (the caller takes the full route for that block)."""
    rows, cols = w.shape
    extremes = _sigma_extremes(w if rows >= cols else w.T)
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
        return torch.from_numpy(np.asarray(matrix, dtype=np.float64))
    return matrix.detach().to(torch.float64)


def block_summary(matrix, full="auto"):
    """The summary columns of one block (see ``block_spectrum``) and, when taken, the full
    spectrum: returns ``(summary, spectrum_or_None)``.

    ``full``: True computes every singular value and eigenvalue (LAPACK, exact); False takes the
    fast route (extreme values only; see the module docstring), which falls back to LAPACK for a
    block it cannot vouch for; ``"auto"`` takes the full route when ``min(rows, cols) <=
    FULL_SPECTRUM_MAX``.
    """
    w = _to_float64(matrix)
    if w.numel() == 0:
        return _nan_summary(w.shape), None
    frobenius = torch.linalg.vector_norm(w).item()  # NaN or Inf anywhere shows here
    if not math.isfinite(frobenius):
        return _nan_summary(w.shape), None
    if not _wants_full(w.shape, full):
        summary = _fast_summary(w.contiguous(), frobenius)
        if summary is not None:
            return summary, None
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
    rows, values, done = [], [], {}
    for gate, matrix in blocks:
        key = (matrix.data_ptr(), tuple(matrix.shape), tuple(matrix.stride()))
        if key not in done:  # RNN: "hh" and "all" are the same matrix
            done[key] = block_summary(matrix, full=full)
        summary, spectrum = done[key]
        rows.append({"step": step, "module": module, "layer": layer, "direction": direction,
                     "gate": gate, **summary})
        if spectrum is not None:
            values.append(_value_record(step, module, layer, direction, gate, spectrum))
    return rows, values


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
