"""Krylov eigensolvers that vouch for their own answers.

The fast route of ``gradscope.spectra`` needs a few extreme eigenvalues of large matrices, each to
a stated relative accuracy. The solvers here never return a value they cannot bound:

- ``lanczos_extremes``: block Lanczos with full reorthogonalisation for a symmetric operator,
  accepting a Ritz value when its residual, or its Kato-Temple bound ``residual^2 / gap``, is
  below the tolerance;
- ``polished``: the float64 Rayleigh quotient of a Ritz vector found with a rounded (float32)
  operator, checked the same way with the exact operator;
- ``Arnoldi`` and ``two_sided_top``: Krylov bases of a non-symmetric operator, and from a right
  and a left one the two-sided Rayleigh quotients of the top eigenvalues, whose errors are about
  the product of the two residuals over ``|y^T x| sigma_max``.

Each returns None when its check fails; the caller then takes a slower, exact route.
"""

import math

import torch


def generator():
    # a private, seeded generator: results are reproducible and the user's RNG stream is untouched
    return torch.Generator(device="cpu").manual_seed(20130101)


def random(shape, like, gen):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(like.device, like.dtype)


# --- symmetric operators --------------------------------------------------------------------

class _BlockLanczos:
    """A block Krylov basis of a symmetric operator with full reorthogonalisation, the operator's
    images of it, and the projection ``basis^T A basis``, grown one block at a time."""

    def __init__(self, apply, size, like, gen, block, max_dim):
        self.apply, self.size = apply, size
        self.max_dim = min(max_dim, size)
        self.basis = like.new_empty(size, self.max_dim)
        self.images = like.new_empty(size, self.max_dim)
        self.projected = like.new_zeros(self.max_dim, self.max_dim)
        self.block = torch.linalg.qr(random((size, min(block, size)), like, gen)).Q
        self.dim, self.exhausted = 0, False

    @property
    def done(self):
        """No room left, or no new direction left at working precision (the space closed on
        itself, or what is left of the operator is below rounding)."""
        return self.exhausted or self.dim >= self.max_dim

    def grow(self):
        block, dim = self.block, self.dim
        width = block.shape[1]
        image = self.apply(block)
        self.basis[:, dim:dim + width], self.images[:, dim:dim + width] = block, image
        # the new block's column of the projection is also the first reorthogonalisation pass
        coefficients = self.basis[:, :dim + width].T @ image
        self.projected[:dim + width, dim:dim + width] = coefficients
        self.projected[dim:dim + width, :dim] = self.projected[:dim, dim:dim + width].T
        self.dim = dim = dim + width
        keep = min(width, self.max_dim - dim)
        if keep == 0:
            return
        new = image[:, :keep]
        basis = self.basis[:, :dim]
        # the image's largest entry (no overflow, unlike a norm): rounding in the projections
        # below is about machine precision times it
        scale = new.abs().amax()
        # "twice is enough" for an orthogonal basis; the first pass reuses the projection
        new = new - basis @ coefficients[:, :keep]
        new = new - basis @ (basis.T @ new)
        q, r = torch.linalg.qr(new)
        scale, *sizes = torch.cat([scale.reshape(1), r.diagonal().abs()]).tolist()
        # a column whose new part is down at rounding level carries no new direction: drop it
        # alone (the others may still be new); none left means the space closed on itself
        floor = 1e-12 * math.sqrt(self.size) * scale
        kept = [i for i, size in enumerate(sizes) if size > floor]
        if len(kept) < len(sizes):
            # QR's columns after a dropped one took part of their direction from it, and it
            # is rounding noise, not orthogonal to the basis: orthogonalise them again
            kept_block = q[:, kept]
            kept_block = kept_block - basis @ (basis.T @ kept_block)
            q, r = torch.linalg.qr(kept_block)
            kept = [i for i, size in enumerate(r.diagonal().abs().tolist()) if size > 0.5]
        self.block = q[:, kept]
        self.exhausted = not kept

    def ritz(self):
        """Ritz values (ascending, CPU) and vectors (coefficients in the basis) of the
        projection."""
        projected = self.projected[:self.dim, :self.dim]
        return torch.linalg.eigh(((projected + projected.T) / 2).cpu())


def ritz_values(apply, size, like, gen, max_dim, block=8):
    """The Ritz values (ascending, CPU) of a symmetric operator on a block Krylov space of
    dimension ``max_dim``, unchecked: they lie inside the operator's spectrum (interlacing), the
    extreme ones close to its ends. For choosing shifts."""
    run = _BlockLanczos(apply, size, like, gen, block, max_dim)
    while not run.done:
        run.grow()
    projected = run.projected[:run.dim, :run.dim]
    return torch.linalg.eigvalsh(((projected + projected.T) / 2).cpu())


def lanczos_extremes(apply, size, like, gen, tolerance, bottom=False, give_up_below=-math.inf,
                     block=8, max_dim=480, first_check=4):
    """Largest (and, with ``bottom``, smallest) eigenpair of a symmetric operator
    ``apply(X) = A @ X`` of order ``size``, by block Lanczos with full reorthogonalisation.

    Returns ``[top, low]`` (``low`` only with ``bottom``), each a Ritz pair ``(value, vector,
    gap)``, or None unless every asked value passed its check. For a symmetric operator some
    eigenvalue lies within the residual norm of a Ritz value, the extreme Ritz values never pass
    the extreme eigenvalues, and a Ritz value errs by at most ``residual^2 / gap`` (Kato-Temple,
    gap to the next Ritz value): one of the two must be below ``tolerance`` relative. Gives up
    (None) once the top Ritz value is at most ``give_up_below``: a cluster that no Krylov method
    resolves cheaply. The first check comes after ``first_check`` blocks (fewer for an operator
    whose top stands well apart, as an inverse's does), then at every 15 % of growth.
    """
    run = _BlockLanczos(apply, size, like, gen, block, max_dim)
    next_check = first_check * run.block.shape[1]
    while True:
        run.grow()
        if run.dim >= next_check or run.done:
            next_check = int(run.dim * 1.15)
            # only a basis of the whole space makes the Ritz values exact; a space that merely
            # stopped growing must still pass the residual checks
            found, largest = _lanczos_check(run, bottom, tolerance, exact=run.dim >= size)
            if largest is None or largest <= give_up_below:
                return None
            if all(pair is not None for pair in found):
                return found
            if run.done:
                return None


def _lanczos_check(run, bottom, tolerance, exact):
    """The asked extreme Ritz pairs (each None when not yet vouched for) and the largest Ritz
    value (None when not finite)."""
    values, vectors = run.ritz()
    if not bool(torch.isfinite(values).all()):
        return [], None
    basis, images = run.basis[:, :run.dim], run.images[:, :run.dim]
    found = []
    for end in ([-1, 0] if bottom else [-1]):
        theta = values[end].item()
        vector = basis @ vectors[:, end].to(basis.device, basis.dtype)
        gap = abs(theta - values[-2 if end == -1 else 1].item()) if len(values) > 1 else 0.0
        if exact:
            found.append((theta, vector, gap))
            continue
        image = images @ vectors[:, end].to(basis.device, basis.dtype)
        residual, length = torch.stack([torch.linalg.vector_norm(image - theta * vector),
                                        torch.linalg.vector_norm(vector)]).tolist()
        # a unit Ritz vector, or the basis has lost its orthogonality and nothing is vouched for
        vouched = abs(length - 1) <= 1e-6 and within(residual, gap, theta, tolerance)
        found.append((theta, vector, gap) if vouched else None)
    return found, values[-1].item()


def polished(apply, pair, tolerance):
    """The Rayleigh quotient with ``apply`` (the exact float64 operator) of a Ritz vector found
    with a rounded one, if its Kato-Temple bound is within ``tolerance``; else None. ``pair`` is
    ``(value, vector, gap)``; only the vector and the gap are used."""
    _, vector, gap = pair
    vector = vector.unsqueeze(1) / torch.linalg.vector_norm(vector)
    image = apply(vector)
    value = (vector.T @ image).item()
    residual = torch.linalg.vector_norm(image - value * vector).item()
    return value if within(residual, gap, value, tolerance) else None


def within(residual, gap, value, tolerance):
    """Whether a symmetric Ritz value is vouched for to ``tolerance`` relative: some eigenvalue
    lies within ``residual`` of it, and, once the residual is well below the gap to the next
    Ritz value, within ``residual^2 / gap`` (Kato-Temple)."""
    bound = tolerance * abs(value)
    return residual <= bound or (gap > 0 and residual <= 1e-2 * gap
                                 and residual ** 2 / gap <= bound)


# --- non-symmetric operators ----------------------------------------------------------------

class Arnoldi:
    """An orthonormal basis (float64) of the Krylov space of ``operator`` from ``start``, grown on
    demand ``chain`` vectors at a time: ``chain`` products with the latest vector, each
    normalised (in the operator's dtype), then the block is orthogonalised against the basis
    twice and by one QR. The space is the one that one vector at a time would give, for about a
    quarter of the small tensor operations, which cost more than the products here.

    For the Rayleigh-Ritz checks, the images ``target @ basis`` and the projection
    ``basis^T target basis`` of a float64 ``target`` (the matrix whose eigenvalues are wanted;
    the operator is a power of it) are brought up to date before each check, one product for
    the columns added since the last.
    """

    def __init__(self, operator, target, start, max_dim, chain=8):
        self.operator, self.target, self.chain = operator, target, chain
        size = min(max_dim, start.shape[0])
        # every entry is written before it is read (see extend and _project)
        self.basis = start.new_empty(start.shape[0], size)
        self.images = start.new_empty(start.shape[0], size)
        self.projected = start.new_empty(size, size)
        self.basis[:, :1] = (start / torch.linalg.vector_norm(start)).unsqueeze(1)
        self.dim, self.projected_dim, self.closed = 1, 0, False

    def _project(self):
        old, new = self.projected_dim, self.dim
        if old == new:
            return
        block = self.basis[:, old:new]
        self.images[:, old:new] = self.target @ block
        self.projected[:new, old:new] = self.basis[:, :new].T @ self.images[:, old:new]
        self.projected[old:new, :old] = block.T @ self.images[:, :old]
        self.projected_dim = new

    def extend(self, dim):
        """Grow to ``dim`` columns, fewer once the space closed on itself (an invariant
        subspace, to working precision: it then holds all it will)."""
        dim = min(dim, self.basis.shape[1])
        while self.dim < dim and not self.closed:
            v = self.basis[:, self.dim - 1].to(self.operator.dtype)
            vectors = []
            for _ in range(min(self.chain, dim - self.dim)):
                v = self.operator @ v
                v = v / torch.linalg.vector_norm(v)
                vectors.append(v)
            block = torch.stack(vectors, 1).to(torch.float64)
            basis = self.basis[:, :self.dim]
            for _ in range(2):
                block = block - basis @ (basis.T @ block)
            q, r = torch.linalg.qr(block)
            # the unit chain vectors' new directions: once one is below rounding, the ones after
            # it are too (they are products of it); the next chain starts from the last kept one
            new = r.diagonal().abs().cpu().tolist()
            keep = next((i for i, size in enumerate(new) if not size > 1e-8), len(new))
            self.basis[:, self.dim:self.dim + keep] = q[:, :keep]
            self.dim += keep
            self.closed = keep == 0
        return self

    def ritz_vector(self, shift, gen):
        """The unit Ritz vector of ``target`` on the basis whose Ritz value is nearest the complex
        ``shift``, and that vector's image under ``target``: two steps of inverse iteration on the
        small projection (an eigendecomposition of it costs more, mostly in thread start-up)."""
        self._project()
        k = self.dim
        small = self.projected[:k, :k].cpu().to(torch.complex128)
        shifted = small - shift * torch.eye(k, dtype=small.dtype)
        # nudged off the Ritz value itself, so the solve never meets an exact zero pivot
        shifted.diagonal().sub_(1e-13 * max(abs(shift), 1e-300))
        coefficients = random((k, 1), small.real, gen).to(small.dtype)
        for _ in range(2):
            coefficients, info = torch.linalg.solve_ex(shifted, coefficients)
            coefficients = coefficients / torch.linalg.vector_norm(coefficients)
        if info.item() != 0 or not bool(torch.isfinite(coefficients).all()):
            return None, None
        parts = torch.cat([coefficients.real, coefficients.imag], 1).to(self.basis.device)
        v, image = self.basis[:, :k] @ parts, self.images[:, :k] @ parts
        scale = torch.linalg.matrix_norm(v)
        return (torch.complex(v[:, 0], v[:, 1]) / scale,
                torch.complex(image[:, 0], image[:, 1]) / scale)

    def ritz_values(self):
        """The Ritz values of ``target`` on the basis (complex, CPU)."""
        self._project()
        return torch.linalg.eigvals(self.projected[:self.dim, :self.dim].cpu())


# a Ritz value whose modulus plus this many residuals stays below the top's is taken to stand
# for an eigenvalue below the top (for a normal matrix one residual would do)
_REACH = 2.0


def two_sided_top(right, left, sigma_max, tolerance, gen, wanted=3):
    """The largest |eigenvalue| of a real ``W``, or None when it cannot be vouched for.
    ``right``: an ``Arnoldi`` whose target is ``W``; ``left``: one whose target is ``W^T``
    (``W^T y = lambda y`` makes ``y^T`` a left eigenvector).

    The Ritz value of largest modulus must pass ``two_sided_value``, and so must each of the next
    ``wanted - 1`` (one of each conjugate pair) that could still stand for a larger eigenvalue:
    one whose modulus plus twice its residual reaches the top's. The answer is the largest
    modulus vouched for. One Ritz value would do if Krylov spaces always caught the top
    eigenvalue first; when two moduli nearly tie, the second can converge first while the
    first's Ritz value still lies below it with a large residual. A top that stands apart
    (trained weights often have one) is taken once the next ones are clearly below it.
    """
    values = right.ritz_values()
    # a real matrix's eigenvalues pair with their conjugates: one of each pair, by modulus
    tops = sorted((v for v in values.tolist() if v.imag >= 0), key=abs, reverse=True)[:wanted]
    if not tops:
        return None
    top = two_sided_value(right, left, tops[0], sigma_max, tolerance, gen)
    if top is None:
        return None
    moduli = [abs(top)]
    for theta in tops[1:]:
        x, wx = right.ritz_vector(theta, gen)
        if x is None:
            return None
        residual = torch.linalg.vector_norm(wx - theta * x).item()
        if abs(theta) + _REACH * residual < moduli[0]:
            continue  # the eigenvalue it stands for lies below the top
        rho = two_sided_value(right, left, theta, sigma_max, tolerance, gen)
        if rho is None:
            return None
        moduli.append(abs(rho))
    return max(moduli)


def two_sided_value(right, left, theta, sigma_max, tolerance, gen):
    """The eigenvalue of a real ``W`` near its Ritz value ``theta``, or None when the two-sided
    bound is above ``tolerance`` (relative).

    The right and left Ritz vectors ``x`` and ``y`` for the Ritz values nearest ``theta`` give the
    two-sided Rayleigh quotient ``rho = y^T W x / y^T x``, which errs by about
    ``|W x - rho x| |W^T y - rho y| / (|y^T x| sigma_max)``; that must be below
    ``tolerance * |rho|``. A left space that has not converged to the same eigenvalue shows as a
    large left residual.
    """
    x, wx = right.ritz_vector(theta, gen)
    y, wty = left.ritz_vector(theta, gen)
    if x is None or y is None:
        return None
    overlap = (y @ x).item()  # y^T x, no conjugation: the left eigenvector is the row y^T
    if overlap == 0 or not sigma_max > 0:
        return None
    rho = (y @ wx).item() / overlap
    residual_right = torch.linalg.vector_norm(wx - rho * x).item()
    residual_left = torch.linalg.vector_norm(wty - rho * y).item()
    # residual_left / sigma_max bounds how far y is from the left eigenvector (relative to the
    # scale of W), so the bound has the units of an eigenvalue: a scaled W gets the same verdict
    bound = residual_right * residual_left / (abs(overlap) * sigma_max)
    if not bound <= tolerance * abs(rho) or abs(abs(theta) - abs(rho)) > 1e-5 * abs(rho):
        return None
    if abs(rho) > sigma_max * (1 + 1e-8):
        return None  # |lambda| <= sigma_max always: something went wrong, use LAPACK
    return rho
