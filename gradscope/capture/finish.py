"""Turning a closed step into table rows: one device-to-host copy per device, then numpy/pandas."""

import numpy as np
import pandas as pd
import torch

from gradscope.records import frame


def _to_host(tensors):
    """Copy a list of float64 tensors to numpy with one transfer per device."""
    by_device = {}
    for index, tensor in enumerate(tensors):
        by_device.setdefault(tensor.device, []).append(index)
    out = [None] * len(tensors)
    for indices in by_device.values():
        flat = torch.cat([tensors[i].reshape(-1).to(torch.float64) for i in indices]).cpu().numpy()
        start = 0
        for i in indices:
            size = tensors[i].numel()
            out[i] = flat[start:start + size].reshape(tuple(tensors[i].shape))
            start += size
    return out


TIMESTEP_COLUMNS = ("step", "module", "cell", "call", "layer", "direction", "state", "t", "batch", "grad_norm",
                    "carried_norm", "direct_norm", "nonfinite", "finite_grad_norm")


def timestep_and_gate_tables(step):
    """The ``timesteps`` and ``gates`` rows of a closed step: the sums of every call and track
    copied to the host at once, then turned into rows."""
    series, gates, tracks = [], [], []
    for record in step.close_calls():
        for key, sums in record.finish():
            series.append((record, key, sums))
        if record.received:
            gates.extend((record, item) for item in record.gate_stats)
    for track in step.tracks.values():
        for key, sums in track.sums.items():
            tracks.append((track, key, sums))
    host = _to_host([s for _, _, s in series] + [g[4] for _, g in gates] + [s for _, _, s in tracks])
    host_series = host[:len(series)]
    host_gates = host[len(series):len(series) + len(gates)]
    host_tracks = host[len(series) + len(gates):]

    columns = {c: [] for c in TIMESTEP_COLUMNS}
    for (record, key, _), sums in zip(series, host_series):
        _add_call_rows(columns, step.number, record, key, sums)
    for (track, key, _), sums in zip(tracks, host_tracks):
        _add_track_row(columns, step.number, track, key, sums)
    return _timesteps_frame(columns), _gates_frame(step.number, gates, host_gates)


def _add_call_rows(columns, number, record, key, sums):
    """One series of a call (layer, direction, state): a row per time step."""
    layer, direction, state = key
    batch = np.asarray(record.batch_sizes, dtype=np.float64)
    n = record.T
    columns["step"].append(np.full(n, number))
    columns["module"].append([record.module] * n)
    columns["cell"].append([record.cell] * n)
    columns["call"].append(np.full(n, record.call))
    columns["layer"].append(np.full(n, layer))
    columns["direction"].append([direction] * n)
    columns["state"].append([state] * n)
    columns["t"].append(record.t_offset + np.arange(n))
    columns["batch"].append(batch.astype(np.int64))
    columns["grad_norm"].append(sums[0] / batch)
    columns["carried_norm"].append(sums[1] / batch)
    columns["direct_norm"].append(sums[2] / batch)
    columns["nonfinite"].append(np.rint(sums[3]).astype(np.int64))
    columns["finite_grad_norm"].append(_finite_mean(sums[4], batch - np.rint(sums[3])))


def _add_track_row(columns, number, track, key, sums):
    """One marked state of a ``scope.track`` label at one t: one row."""
    state, t = key
    batch = track.batch[(state, t)]
    for name, value in (("step", [number]), ("module", [track.label]), ("cell", ["track"]),
                        ("call", [0]), ("layer", [0]), ("direction", ["forward"]), ("state", [state]),
                        ("t", [t]), ("batch", [batch]), ("grad_norm", [sums[0] / batch]),
                        ("carried_norm", [sums[1] / batch]), ("direct_norm", [sums[2] / batch]),
                        ("nonfinite", [int(round(sums[3]))]),
                        ("finite_grad_norm", [_finite_mean(sums[4], batch - round(sums[3]))])):
        columns[name].append(value)


def _timesteps_frame(columns):
    if not columns["step"]:
        return frame("timesteps")
    data = {k: np.concatenate([np.asarray(v, dtype=object if k in ("module", "cell", "direction", "state")
                                          else None) for v in vs]) for k, vs in columns.items()}
    timesteps = pd.DataFrame(data)
    timesteps = timesteps.sort_values(["module", "call", "layer", "direction", "state", "t"], kind="stable")
    return frame("timesteps", timesteps.astype({
        "step": "int64", "call": "int64", "layer": "int64", "t": "int64", "batch": "int64",
        "nonfinite": "int64", "grad_norm": "float64", "carried_norm": "float64", "direct_norm": "float64",
        "finite_grad_norm": "float64"}))


def _gates_frame(number, gates, host_gates):
    gate_rows = []
    for (record, (layer, direction, gate, activation, _)), stats in zip(gates, host_gates):
        count = stats[0]
        gate_rows.append({
            "step": number, "module": record.module, "call": record.call, "layer": layer,
            "direction": direction, "gate": gate, "activation": activation, "count": int(count),
            "mean": stats[1] / count if count else np.nan,
            "low": stats[2] / count if count else np.nan,
            "high": stats[3] / count if count else np.nan,
        })
    return frame("gates", gate_rows)


def _finite_mean(total, count):
    """Mean over ``count`` finite sequences (NaN where there is none)."""
    count = np.asarray(count, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.asarray(total, dtype=np.float64) / np.maximum(count, 1), np.nan)
