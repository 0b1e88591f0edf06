"""The record schema: the columns of every table a Scope, a Run folder or a report reads.

API.md fixes the names of the first three tables; ``gates`` is gradscope's own addition
(gate-activation statistics used by the saturation analyzer).
"""

import pandas as pd

SCHEMA_VERSION = 1

TIMESTEP_COLUMNS = [
    "step", "module", "cell", "call", "layer", "direction", "state", "t", "batch",
    "grad_norm", "carried_norm", "direct_norm", "nonfinite",
]
SPECTRA_COLUMNS = [
    "step", "module", "layer", "direction", "gate", "rows", "cols",
    "sigma_max", "sigma_min", "spectral_radius", "stable_rank", "frobenius",
]
JACOBIAN_COLUMNS = ["step", "module", "call", "layer", "direction", "t", "jac_norm"]
LYAPUNOV_COLUMNS = ["step", "module", "layer", "direction", "index", "exponent"]
# Per gate (or tanh'd quantity) and recorded step: how many activations sit near the ends.
# low/high: share within Rules-independent margin 0.05 of the activation's bounds (0/1 for
# sigmoid gates, -1/+1 for tanh), mean: mean activation.
GATE_COLUMNS = [
    "step", "module", "call", "layer", "direction", "gate", "activation", "count",
    "mean", "low", "high",
]

# Forward-side NaN/Inf (exact route of nn.RNN/GRU/LSTM only), one row per call, place, layer
# and t where some sequence held one: place "input" (what enters layer 0) or "output" (the
# layer's h_t); nonfinite: how many sequences; sequences: the first few batch indices, "0,3".
FORWARD_NONFINITE_COLUMNS = [
    "step", "module", "call", "layer", "place", "t", "nonfinite", "sequences",
]

TABLES = {
    "timesteps": TIMESTEP_COLUMNS,
    "spectra": SPECTRA_COLUMNS,
    "jacobians": JACOBIAN_COLUMNS,
    "lyapunov": LYAPUNOV_COLUMNS,
    "gates": GATE_COLUMNS,
    "forward_nonfinite": FORWARD_NONFINITE_COLUMNS,
}


def frame(table, rows=None):
    """A DataFrame of ``table`` with exactly its columns, in order (empty when no rows)."""
    columns = TABLES[table]
    if rows is None or len(rows) == 0:
        return pd.DataFrame({c: pd.Series(dtype=dtype_of(c)) for c in columns})
    if isinstance(rows, pd.DataFrame):
        return rows.reindex(columns=columns).reset_index(drop=True)
    return pd.DataFrame(rows, columns=columns)


def dtype_of(column):
    """The pandas dtype of a column in every table."""
    if column in ("module", "cell", "direction", "state", "gate", "activation", "place", "sequences"):
        return object
    if column in ("step", "call", "layer", "t", "batch", "nonfinite", "rows", "cols", "index", "count"):
        return "int64"
    return "float64"


_dtype = dtype_of  # the store's older name
