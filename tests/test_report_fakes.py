"""A made-up source with the records columns and a plausible shape (a gradient that decays
geometrically going back in time), for report tests that must not depend on watch or torch.

Other test_report_* files import FakeSource from here."""

import numpy as np
import pandas as pd

from gradscope.records import TABLES, TableSource, frame, select_rows

GATES = {"RNN_TANH": ("hh",), "GRU": ("r", "z", "n"), "LSTM": ("i", "f", "g", "o")}
ACTIVATION = {"hh": "tanh", "r": "sigmoid", "z": "sigmoid", "n": "tanh",
              "i": "sigmoid", "f": "sigmoid", "g": "tanh", "o": "sigmoid"}


class FakeSource(TableSource):
    """A table source like a Scope: name, meta, the tables and spectrum().

    Per step s the gain drifts from ``gain`` toward ``gain * drift``; the loss enters at the
    last time step only (direct = 1 there), so total_t = gain**(T-1-t) for the forward direction.
    """

    def __init__(self, name="fake", cell="LSTM", modules=("rnn",), layers=2, directions=("forward",),
                 T=30, steps=6, gain=0.8, drift=1.0, hidden=6, batch=4, jacobians=True, spectra=True,
                 nonfinite_step=None, seed=0):
        self.name = name
        self.cell = cell
        self.meta = {"schema": 1, "name": name, "mode": "exact", "every": 1,
                     "modules": {m: {"cell": cell, "kind": "module", "layers": layers,
                                     "directions": list(directions), "hidden_size": hidden,
                                     "proj_size": 0} for m in modules}}
        rng = np.random.default_rng(seed)
        states = ("h", "c") if cell == "LSTM" else ("h",)
        ts, sp, jac, lya, gates = [], [], [], [], []
        self._matrices = {}
        for step in range(steps):
            g = gain * drift ** (step / max(steps - 1, 1))
            for module in modules:
                for layer in range(layers):
                    for direction in directions:
                        for state in states:
                            sg = g if state == "h" else min(g * 1.15, 0.999)
                            for t in range(T):
                                back = T - 1 - t if direction == "forward" else t
                                total = sg ** back * (1 + 0.05 * rng.standard_normal())
                                direct = 1.0 if back == 0 else 0.0
                                carried = 0.0 if back == 0 else total
                                bad = int(nonfinite_step == step and back == 0)
                                ts.append((step, module, cell, 0, layer, direction, state, t, batch,
                                           np.nan if bad else total, carried, direct, bad))
                        for gate in GATES[cell] + ("all",):
                            rows = hidden * (len(GATES[cell]) if gate == "all" else 1)
                            w = rng.standard_normal((rows, hidden)) * g / np.sqrt(hidden)
                            self._matrices[(step, module, layer, direction, gate)] = w
                            s = np.linalg.svd(w, compute_uv=False)
                            radius = float(np.abs(np.linalg.eigvals(w)).max()) if rows == hidden else np.nan
                            sp.append((step, module, layer, direction, gate, rows, hidden, s[0], s[-1],
                                       radius, float((s ** 2).sum() / s[0] ** 2), float(np.sqrt((s ** 2).sum()))))
                        for gate in GATES[cell]:
                            gates.append((step, module, 0, layer, direction, gate, ACTIVATION[gate],
                                          batch * T * hidden, 0.5, 0.1 + 0.05 * layer, 0.2))
                        if jacobians:
                            for t in range(T - 1):
                                jac.append((step, module, 0, layer, direction, t, g * (1 + 0.1 * np.sin(t))))
                            for i in range(hidden):
                                lya.append((step, module, layer, direction, i, np.log(g) - 0.2 * i))
        timesteps = pd.DataFrame(ts, columns=[c for c in TABLES["timesteps"] if c != "finite_grad_norm"])
        # the mean over the finite sequences: the total where all are finite (fewer is not modelled)
        timesteps["finite_grad_norm"] = timesteps["grad_norm"].where(timesteps["nonfinite"] == 0)
        self._tables = {
            "timesteps": frame("timesteps", timesteps),
            "spectra": frame("spectra", pd.DataFrame(sp, columns=TABLES["spectra"]) if spectra else None),
            "jacobians": frame("jacobians", pd.DataFrame(jac, columns=TABLES["jacobians"]) if jac else None),
            "lyapunov": frame("lyapunov", pd.DataFrame(lya, columns=TABLES["lyapunov"]) if lya else None),
            "gates": frame("gates", pd.DataFrame(gates, columns=TABLES["gates"])),
        }
        self._has_spectra = spectra

    def table(self, table, steps=None, columns=None):
        rows = self._tables.get(table)
        if rows is None:  # forward_nonfinite: the fakes' forward passes are finite
            rows = frame(table)
        return select_rows(rows, table, steps, columns)

    def steps(self):
        return sorted(int(s) for s in self._tables["timesteps"]["step"].unique())

    def spectrum(self, module, layer=0, direction="forward", gate=None, step=-1):
        if not self._has_spectra:
            raise KeyError("no spectra recorded")
        steps = sorted({k[0] for k in self._matrices})
        key = (steps[step] if step < 0 else step, module, layer, direction, gate or "all")
        if key not in self._matrices:
            raise KeyError(f"no spectrum for {key}")
        w = self._matrices[key]
        eig = np.linalg.eigvals(w) if w.shape[0] == w.shape[1] else np.zeros(0, dtype=complex)
        return {"singular_values": np.linalg.svd(w, compute_uv=False), "eigenvalues": eig.astype(complex)}


def test_fake_source_has_the_records_columns():
    source = FakeSource(cell="GRU", directions=("forward", "reverse"))
    for table in TABLES:
        assert list(getattr(source, table)().columns) == TABLES[table]
    assert len(source.timesteps()) == 6 * 2 * 2 * 30
    assert source.spectrum("rnn", 1, "reverse", "z")["eigenvalues"].shape == (6,)


def write_run_folder(source, path):
    """Write ``source``'s tables and spectra into a run folder with the store's RunWriter, so
    tests can render a real ``gradscope.load`` Run."""
    from gradscope.store import RunWriter

    tables = {name: getattr(source, name)() for name in TABLES}
    with RunWriter(path, source.meta) as writer:
        for step in sorted(tables["timesteps"]["step"].unique()):
            values = []
            for (s, module, layer, direction, gate), w in source._matrices.items():
                if s == step and source._has_spectra:
                    spectrum = source.spectrum(module, layer, direction, gate, step=int(s))
                    eig = spectrum["eigenvalues"]
                    values.append({"step": int(s), "module": module, "layer": layer, "direction": direction,
                                   "gate": gate, "singular_values": spectrum["singular_values"].tolist(),
                                   "eigenvalues_real": eig.real.tolist(), "eigenvalues_imag": eig.imag.tolist()})
            writer.write_step(int(step), {name: t[t["step"] == step] for name, t in tables.items()}, values)
    return path

