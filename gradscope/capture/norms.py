"""Row norms of state gradients that neither underflow nor overflow."""

import torch


def row_norms(rows: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each row of a 2-D tensor, as float64 on the tensor's device (no host sync).

    ``vector_norm`` squares the entries. Lower precisions are widened to float64 first, where
    their whole range squares safely; float64 entries below ~1e-154 or above ~1e+154 do not
    (a gradient of 1e-300 would read 0, one of 1e+300 Inf), so float64 rows are divided by
    their largest entry first. A row with a NaN or Inf keeps its NaN or Inf norm.

    Args:
        rows: (N, S) tensor, one gradient per row.

    Returns:
        (N,) float64 tensor of norms.
    """
    if rows.dtype != torch.float64 or rows.shape[-1] == 0:
        return torch.linalg.vector_norm(rows, dim=1, dtype=torch.float64)
    scale = rows.abs().amax(dim=1, keepdim=True)
    scale = torch.where((scale > 0) & torch.isfinite(scale), scale, torch.ones_like(scale))
    return torch.linalg.vector_norm(rows / scale, dim=1) * scale.squeeze(1)
