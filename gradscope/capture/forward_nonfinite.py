"""Forward-side NaN/Inf: which sequences hold a non-finite value in a module's input or in a
layer's output (its states h_t) at which t. A NaN gradient alone cannot say where it came from
(a NaN in the input at t=3 makes every later state, the loss and so every gradient NaN); these
rows can, and ``gradscope.analyze`` reads them to give advice that fits (clean the data, not
clip the gradient).

Both routes of nn.RNN / nn.GRU / nn.LSTM (exact and fast) record them; cells, custom cells and
``track`` do not. Nothing syncs with the host
during the forward: the per-row flags stay on the device until the step closes.
"""

import numpy as np
import torch

from gradscope.records import frame

MAX_LISTED = 8  # sequences named per row; ``nonfinite`` counts them all
_ATTRIBUTE = "forward_nonfinite_flags"  # on a CallRecord: [(place, layer, flags (N,) bool)]


def note_nonfinite_rows(record, place: str, layer: int, flat: torch.Tensor) -> None:
    """Remember which rows of ``flat`` hold a NaN or Inf, for the step's close.

    Args:
        record: the CallRecord of the call being stepped.
        place: ``"input"`` (what enters layer 0) or ``"output"`` (layer ``layer``'s h_t, all
            directions side by side).
        layer: the layer the rows belong to.
        flat: the call's rows in the exact route's layout, (sum of batch sizes, features).
    """
    with torch.no_grad():
        rows = flat.detach()
        if rows.device.type == "cpu" and bool(torch.isfinite(rows.sum())):
            # the usual case, in one pass: a sum of finite entries is finite unless it
            # overflows, and a NaN or Inf makes it NaN or Inf (no host sync on the CPU)
            return
        # a row holds a NaN or an Inf iff its largest or its smallest value is one (amax/amin
        # propagate NaN): two passes and no temporary, far cheaper on the CPU than
        # isfinite(flat).all(dim=1) (~20x) or abs().amax (a full copy), same answer
        flags = ~(torch.isfinite(rows.amax(dim=1)) & torch.isfinite(rows.amin(dim=1)))
    if not hasattr(record, _ATTRIBUTE):
        setattr(record, _ATTRIBUTE, [])
    getattr(record, _ATTRIBUTE).append((place, layer, flags))


def forward_nonfinite_table(step):
    """The ``forward_nonfinite`` rows of a closed step: one per call, place, layer and t where
    at least one sequence held a NaN or Inf (none when everything was finite).

    Args:
        step: the closed Step; its ``closed_calls`` (fixed by ``Step.close_calls`` in
            finish.timestep_and_gate_tables)
            are the calls a gradient reached, numbered as in ``timesteps``.
    Returns:
        A DataFrame with the columns of ``gradscope.records.TABLES["forward_nonfinite"]``.
    """
    rows = []
    for record in step.closed_calls or ():
        checks = getattr(record, _ATTRIBUTE, ())
        if not checks:
            continue
        starts = np.asarray(record.offsets())
        order = (record.sorted_indices.cpu().numpy() if record.sorted_indices is not None
                 else None)
        for place, layer, flags in checks:
            bad = np.flatnonzero(flags.cpu().numpy())
            if not bad.size:
                continue
            t_of_row = np.searchsorted(starts, bad, side="right") - 1
            for t in np.unique(t_of_row):
                sequences = bad[t_of_row == t] - starts[t]
                if order is not None:  # packed input: rows are in sorted order
                    sequences = np.sort(order[sequences])
                rows.append({
                    "step": step.number, "module": record.module, "call": record.call,
                    "layer": layer, "place": place, "t": record.t_offset + int(t),
                    "nonfinite": int(sequences.size),
                    "sequences": ",".join(str(int(s)) for s in sequences[:MAX_LISTED]),
                })
    return frame("forward_nonfinite", rows)
