"""Made-up step records with the real schema: for tests and benchmarks of run folders and
reports that should not need torch or a model. The numbers mean nothing."""

import numpy as np
import pandas as pd

from gradscope.records import frame

GATES = {"RNN_TANH": ("hh",), "GRU": ("r", "z", "n"), "LSTM": ("i", "f", "g", "o")}
_ACTIVATION = {"hh": "tanh", "r": "sigmoid", "z": "sigmoid", "n": "tanh",
               "i": "sigmoid", "f": "sigmoid", "g": "tanh", "o": "sigmoid"}


def synthetic_meta(name="synthetic", modules=("rnn",), cell="LSTM", layers=2, hidden=4):
    """A meta dict shaped like a Scope's."""
    return {"schema": 1, "name": name, "mode": "exact", "every": 1,
            "modules": {m: {"cell": cell, "kind": "module", "layers": layers,
                            "directions": ["forward"], "hidden_size": hidden, "proj_size": 0}
                        for m in modules}}


def synthetic_step(step, *, modules=("rnn",), cell="LSTM", layers=2, T=20, batch=8,
                   hidden=4, seed=0):
    """``(tables, values)`` of one step, as RunWriter.write_step takes them; deterministic in
    ``(seed, step)``. Includes NaN and infinite norms so round trips test them."""
    rng = np.random.default_rng([seed, step])
    states = ("h", "c") if cell == "LSTM" else ("h",)
    gates = GATES[cell]
    keys = [(m, layer) for m in modules for layer in range(layers)]

    n = len(keys) * len(states) * T
    key_index = np.repeat(np.arange(len(keys)), len(states) * T)
    grad = rng.lognormal(-3.0, 2.0, n)
    grad[rng.random(n) < 0.01] = np.nan
    grad[rng.random(n) < 0.005] = np.inf
    timesteps = frame("timesteps", pd.DataFrame({
        "step": step, "module": [keys[i][0] for i in key_index], "cell": cell, "call": 0,
        "layer": [keys[i][1] for i in key_index], "direction": "forward",
        "state": np.tile(np.repeat(states, T), len(keys)), "t": np.tile(np.arange(T), len(keys) * len(states)),
        "batch": batch, "grad_norm": grad, "carried_norm": grad * rng.random(n),
        "direct_norm": grad * rng.random(n), "nonfinite": (~np.isfinite(grad)).astype(np.int64),
    }))

    blocks = [(m, layer, g) for m, layer in keys for g in gates + ("all",)]
    spectra, values = [], []
    for m, layer, g in blocks:
        rows = hidden * (len(gates) if g == "all" else 1)
        sv = np.sort(rng.random(hidden))[::-1] * 2.0
        eig = rng.standard_normal(hidden) + 1j * rng.standard_normal(hidden)
        spectra.append({"step": step, "module": m, "layer": layer, "direction": "forward",
                        "gate": g, "rows": rows, "cols": hidden, "sigma_max": sv[0],
                        "sigma_min": sv[-1], "spectral_radius": float(np.abs(eig).max()),
                        "stable_rank": float((sv ** 2).sum() / sv[0] ** 2),
                        "frobenius": float(np.sqrt((sv ** 2).sum()))})
        values.append({"step": step, "module": m, "layer": layer, "direction": "forward",
                       "gate": g, "singular_values": sv.tolist(),
                       "eigenvalues_real": eig.real.tolist(), "eigenvalues_imag": eig.imag.tolist()})

    jacobians = frame("jacobians", pd.DataFrame({
        "step": step, "module": [keys[i][0] for i in np.repeat(np.arange(len(keys)), T - 1)],
        "call": 0, "layer": [keys[i][1] for i in np.repeat(np.arange(len(keys)), T - 1)],
        "direction": "forward", "t": np.tile(np.arange(T - 1), len(keys)),
        "jac_norm": rng.lognormal(0.0, 0.3, len(keys) * (T - 1))}))
    lyapunov = frame("lyapunov", [
        {"step": step, "module": m, "layer": layer, "direction": "forward", "index": i,
         "exponent": float(-0.1 * (i + 1) + 0.01 * rng.standard_normal())}
        for m, layer in keys for i in range(hidden)])
    gate_rows = frame("gates", [
        {"step": step, "module": m, "call": 0, "layer": layer, "direction": "forward",
         "gate": g, "activation": _ACTIVATION[g], "count": batch * T * hidden,
         "mean": float(rng.random()), "low": float(rng.random() * 0.1),
         "high": float(rng.random() * 0.1)}
        for m, layer in keys for g in gates])
    forward = frame("forward_nonfinite", [
        {"step": step, "module": m, "call": 0, "layer": layer,
         "place": "input" if layer == 0 else "output", "t": int(t), "nonfinite": 2,
         "sequences": f"{t % batch},{(t + 3) % batch}"}
        for m, layer in keys for t in rng.choice(T, size=2, replace=False)])
    tables = {"timesteps": timesteps, "spectra": frame("spectra", spectra),
              "jacobians": jacobians, "lyapunov": lyapunov, "gates": gate_rows,
              "forward_nonfinite": forward}
    return tables, values
