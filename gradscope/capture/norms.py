"""Row norms of state gradients that neither underflow nor overflow."""

import torch

# A float32 row whose norm lies in this range has no square that overflows and none that
# underflows by more than ~1e-14 of the row's sum: its float32 norm is as good as a float64 one.
_SAFE_LOW, _SAFE_HIGH = 1e-15, 1e15
# rows outside that range are taken again in float64 one by one while they are at most one in
# this many; more, and zero rows (whose float32 norm is exact) are first found for all rows at once
_FEW_UNSAFE = 8


def row_norms(rows: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each row of a 2-D tensor, as float64 on the tensor's device.

    ``vector_norm`` squares the entries in the input's precision. Lower precisions: on the CPU
    the norm is taken in float32 (one pass, no copy) and only rows outside the safe range are
    taken again in float64, where their whole range squares safely (zero rows, exact in
    float32, are skipped where they are many); on other devices every row is widened (no host
    sync). float64 entries below ~1e-154 or above ~1e+154 do not square
    safely either (a gradient of 1e-300 would read 0, one of 1e+300 Inf), so float64 rows are
    divided by their largest entry first. A row with a NaN or Inf keeps its NaN or Inf norm.

    Args:
        rows: (N, S) tensor, one gradient per row.

    Returns:
        (N,) float64 tensor of norms.
    """
    if rows.shape[-1] == 0:
        return torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    if rows.dtype != torch.float64:
        if rows.device.type != "cpu":
            return torch.linalg.vector_norm(rows, dim=1, dtype=torch.float64)
        norms = torch.linalg.vector_norm(rows, dim=1, dtype=torch.float32)
        unsafe = ~((norms > _SAFE_LOW) & (norms < _SAFE_HIGH))
        norms = norms.to(torch.float64)
        if not bool(unsafe.any()):  # the usual case: one pass over the rows (no sync on the CPU)
            return norms
        if int(unsafe.sum()) * _FEW_UNSAFE > rows.shape[0]:
            # many: most likely zero rows (a direct part where the loss reads a few steps), whose
            # norm is exact; two passes find them, cheaper than widening them all
            unsafe &= ~((rows.amax(dim=1) == 0) & (rows.amin(dim=1) == 0))
        index = unsafe.nonzero().squeeze(1)
        if index.numel():  # NaN, Inf and extreme rows, and zero rows where they are few
            norms[index] = torch.linalg.vector_norm(rows[index], dim=1, dtype=torch.float64)
        return norms
    scale = rows.abs().amax(dim=1, keepdim=True)
    scale = torch.where((scale > 0) & torch.isfinite(scale), scale, torch.ones_like(scale))
    return torch.linalg.vector_norm(rows / scale, dim=1) * scale.squeeze(1)


def nonfinite_rows(rows: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """(N,) bool: rows holding a NaN or an Inf, given their ``row_norms``.

    Below float64 a row's norm is NaN or Inf exactly when one of its entries is (its float64
    norm cannot overflow), so the norms answer without another pass over the rows; float64
    rows are checked entry by entry (a finite row's norm may still overflow there)."""
    if rows.dtype != torch.float64:
        return ~torch.isfinite(norms)
    return ~torch.isfinite(rows).all(dim=1)
