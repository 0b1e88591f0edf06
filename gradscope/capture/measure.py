"""Spectra of the weights used in a step, and (opt-in) state Jacobians and Lyapunov spectra.

Each function takes what it measures as arguments and returns its result; the Scope keeps it."""

import numpy as np
import torch

from gradscope.records import frame


def spectra_job(step, labelled, parallel=True):
    """On the training thread, at step close: copy the weights the step used and return a
    function of no arguments that computes the step's spectra from that copy, on any thread.

    Args:
        step: the closed, recorded Step (its measured calls hold the weights they used; the
            recurrent blocks of each module's first call stand for the step).
        labelled: ``{label: matrix}`` of the ``weights=`` entries for this step
            (``weight_reads.labelled_weights``).
        parallel: let ``gradscope.spectra.workers`` use worker threads (only from the
            training thread).

    Returns:
        ``compute() -> (spectra table, full spectrum values, latest weights)``; the latest
        weights ``{(module, layer, direction): (step, kind, weights)}`` serve ``spectrum()``
        for blocks too large to keep a full spectrum of.
    """
    from gradscope.spectra import blocks as sp
    from gradscope.spectra.workers import spectra_of_parts

    jobs = _recurrent_blocks(step)
    labelled = {label: matrix.detach().clone() for label, matrix in labelled.items()}
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


def _recurrent_blocks(step):
    """A copy of the recurrent weights of each module's first measured call (they stand for
    the step), one spectra job per layer and direction."""
    jobs, seen = [], set()
    for record in step.measured_calls():
        if record.module in seen or not record.weights or record.cell not in ("RNN_TANH", "RNN_RELU", "GRU", "LSTM"):
            continue
        seen.add(record.module)
        for (layer, direction), weights in record.weights.items():
            # a copy: the optimizer changes the parameters in place once the step is over
            copied = {k: weights[k].detach().clone() for k in ("w_hh", "w_hr") if weights.get(k) is not None}
            jobs.append({"step": step.number, "module": record.module, "layer": layer, "direction": direction,
                         "kind": record.cell, "weights": copied})
    return jobs


def jacobian_tables(step):
    """Per t: batch mean of the spectral norm of d state_{t+1} / d state_t (the joint (h, c) state
    for LSTM), and per chain of calls the Lyapunov spectrum along the trajectory."""
    from gradscope.spectra import jacobians as jac

    jac_rows, lyap_rows = [], []
    chains = {}
    for record in step.measured_calls():
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
