"""Spectra of the weights used in a step, and (opt-in) state Jacobians and Lyapunov spectra."""

import numpy as np
import torch

from gradscope.records import frame


def weight_and_jacobian_tables(step, scope):
    """Tables ``spectra``, ``jacobians``, ``lyapunov`` of a closed, recorded step, and the full
    spectrum values for ``spectrum()``, all computed now (``watch(spectra="inline")``)."""
    spectra, values, latest = spectra_job(step, scope)()
    if latest:
        scope._latest_weights = latest
    tables = {"spectra": spectra, "jacobians": frame("jacobians"), "lyapunov": frame("lyapunov")}
    if scope._jacobians:
        tables["jacobians"], tables["lyapunov"] = jacobian_tables(step)
    return tables, values


def spectra_job(step, scope, parallel=True):
    """On the training thread, at step close: copy the weights the step used (the recurrent
    blocks only, and each ``weights=`` entry as ``scope._labelled_weights`` resolves it) and
    return a function of no arguments that computes ``(spectra table, full spectrum values,
    latest weights for spectrum())`` from that copy, on any thread. ``parallel``: let
    ``gradscope.spectra.workers`` use worker threads (only from the training thread)."""
    from gradscope.spectra import blocks as sp
    from gradscope.spectra.workers import spectra_of_parts

    jobs, seen = [], set()
    for record in getattr(step, "closed_calls", None) or step.calls():  # the weights of a module's first call stand for the step
        if record.module in seen or not record.weights or record.cell not in ("RNN_TANH", "RNN_RELU", "GRU", "LSTM"):
            continue
        seen.add(record.module)
        for (layer, direction), weights in record.weights.items():
            # a copy: the optimizer changes the parameters in place once the step is over
            copied = {k: weights[k].detach().clone() for k in ("w_hh", "w_hr") if weights.get(k) is not None}
            jobs.append({"step": step.number, "module": record.module, "layer": layer, "direction": direction,
                         "kind": record.cell, "weights": copied})
    labelled = {label: matrix.detach().clone() for label, matrix in scope._labelled_weights(step).items()}
    number = step.number

    def compute():
        rows, values, latest = [], [], {}
        for job in jobs:
            latest[(job["module"], job["layer"], job["direction"])] = (number, job["kind"], job["weights"])
        for r, v in spectra_of_parts(jobs, parallel=parallel):  # weight blocks on worker threads where that pays
            rows.extend(r)
            values.extend(v)
        for label, matrix in labelled.items():
            r, v = sp.labelled_records(number, label, matrix)
            latest[(label, 0, "forward")] = (number, None, matrix)
            rows.extend(r)
            values.extend(v)
        return frame("spectra", rows), values, latest

    return compute


def jacobian_tables(step):
    """Per t: batch mean of the spectral norm of d state_{t+1} / d state_t (the joint (h, c) state
    for LSTM), and per chain of calls the Lyapunov spectrum along the trajectory."""
    from gradscope.spectra import jacobians as jac

    jac_rows, lyap_rows = [], []
    chains = {}
    for record in getattr(step, "closed_calls", None) or step.calls():
        if not record.received:
            continue
        for (layer, direction), inputs in record.jacobian_inputs.items():
            J = jac.state_jacobians(record.cell, inputs["weights"], inputs["xw"], inputs["prev_state"])
            norms = jac.spectral_norms(J).to(torch.float64)
            sums = record.segment_sum(norms.unsqueeze(0))[0].cpu().numpy()
            batch = np.asarray(record.batch_sizes, dtype=np.float64)
            for t in range(record.T):
                jac_rows.append({"step": step.number, "module": record.module, "call": record.call, "layer": layer,
                                 "direction": direction, "t": record.t_offset + t, "jac_norm": sums[t] / batch[t]})
            pieces = list(J.split(record.batch_sizes))
            if direction == "reverse":
                pieces = pieces[::-1]
            chains.setdefault((record.module, record.call, layer, direction), []).append((record.t_offset, pieces))
    by_part = {}
    for (module, call, layer, direction), parts in chains.items():
        state = None
        for _, pieces in sorted(parts, key=lambda item: item[0]):
            state = jac.lyapunov_accumulate(pieces, state)
        by_part.setdefault((module, layer, direction), []).append(state)
    for (module, layer, direction), states in by_part.items():
        exponents = jac.lyapunov_finish_many(states).cpu().numpy()
        for index, value in enumerate(exponents):
            lyap_rows.append({"step": step.number, "module": module, "layer": layer, "direction": direction,
                              "index": index, "exponent": float(value)})
    return frame("jacobians", jac_rows), frame("lyapunov", lyap_rows)
