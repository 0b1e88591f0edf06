"""Brute-force autograd reference: a per-sample Python loop over cell ops, float64, with
``retain_grad()`` on every state and a separate clone for each use of it (the recurrent use,
the layer output, the final state), so each part of dL/dh_t is read straight off autograd.

Written independently of gradscope's own cell math on purpose.
"""

import numpy as np
import torch


def _w(module, name):
    value = getattr(module, name, None)
    return None if value is None else value.detach().double().requires_grad_(True)


def _linear(x, w, b):
    y = x @ w.T
    return y if b is None else y + b


def _weights(module, layer, direction, cell=False):
    if cell:
        sfx = ""
    else:
        sfx = f"_l{layer}" + ("_reverse" if direction == "reverse" else "")
    return {k: _w(module, n + sfx) for k, n in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"),
                                                 ("b_ih", "bias_ih"), ("b_hh", "bias_hh"), ("w_hr", "weight_hr"))}


def cell_math(kind, x, h, c, w):
    """One step of the textbook cell equations (PyTorch's gate layouts)."""
    if kind in ("RNN_TANH", "RNN_RELU"):
        pre = _linear(x, w["w_ih"], w["b_ih"]) + _linear(h, w["w_hh"], w["b_hh"])
        return (torch.tanh(pre) if kind == "RNN_TANH" else torch.relu(pre)), None
    if kind == "GRU":
        gi = _linear(x, w["w_ih"], w["b_ih"])
        gh = _linear(h, w["w_hh"], w["b_hh"])
        size = h.shape[-1]
        r = torch.sigmoid(gi[:size] + gh[:size])
        z = torch.sigmoid(gi[size:2 * size] + gh[size:2 * size])
        n = torch.tanh(gi[2 * size:] + r * gh[2 * size:])
        return (1 - z) * n + z * h, None
    gates = _linear(x, w["w_ih"], w["b_ih"]) + _linear(h, w["w_hh"], w["b_hh"])
    size = c.shape[-1]
    i, f = torch.sigmoid(gates[:size]), torch.sigmoid(gates[size:2 * size])
    g = torch.tanh(gates[2 * size:3 * size])
    new_c = f * c + i * g
    return None, new_c  # h = o * tanh(c) is computed by the caller from a clone of c (its own use)


def reference_module(module, kind, seqs, h0, c0, g_out, g_h, g_c, masks=None):
    """Per-sample reference for nn.RNN/GRU/LSTM.

    seqs: list of (len_b, I) inputs; h0/c0: (L*D, B, S)/(L*D, B, H) initial states (zeros if
    None); the loss is sum_b [ sum(sin(out_b) * g_out[b][:len_b]) + sum(h_n_b * g_h[:, b]) +
    sum(c_n_b * g_c[:, b]) ]; masks: per layer < L-1, (len_b, D*S) dropout multipliers per sample.
    Returns {(b, layer, direction, state, t): (total, carried, direct)} as float64 vectors.
    """
    n_dir = 2 if module.bidirectional else 1
    directions = ("forward", "reverse")[:n_dir]
    out = {}
    for b, x in enumerate(seqs):
        x = x.detach().double()
        length = x.shape[0]
        layer_in = x
        keep = []  # (key, state tensor, recurrent clone or None, [direct clones])
        loss = 0.0
        for layer in range(module.num_layers):
            dir_outs = []
            for d, direction in enumerate(directions):
                w = _weights(module, layer, direction)
                index = layer * n_dir + d
                h = h0[index, b].detach().double()
                c = c0[index, b].detach().double() if kind == "LSTM" else None
                order = range(length - 1, -1, -1) if direction == "reverse" else range(length)
                outs = [None] * length
                last = order[-1]
                for t in order:
                    if kind == "LSTM":
                        _, new_c = cell_math(kind, layer_in[t], h, c, w)
                        new_c.retain_grad()
                        c_for_h = new_c.clone()
                        c_for_h.retain_grad()
                        gates = _linear(layer_in[t], w["w_ih"], w["b_ih"]) + _linear(h, w["w_hh"], w["b_hh"])
                        size = new_c.shape[-1]
                        o = torch.sigmoid(gates[3 * size:])
                        new_h = o * torch.tanh(c_for_h)
                        if w["w_hr"] is not None:
                            new_h = new_h @ w["w_hr"].T
                    else:
                        new_h, _ = cell_math(kind, layer_in[t], h, None, w)
                    new_h.retain_grad()
                    h_out = new_h.clone()
                    h_out.retain_grad()
                    outs[t] = h_out
                    direct_h = [h_out]
                    rec_h = rec_c = None
                    if t != last:
                        rec_h = new_h.clone()
                        rec_h.retain_grad()
                        h = rec_h
                    else:
                        h_fin = new_h.clone()
                        h_fin.retain_grad()
                        direct_h.append(h_fin)
                        loss = loss + (h_fin * g_h[index, b].double()).sum()
                    keep.append(((b, layer, direction, "h", t), new_h, rec_h, direct_h))
                    if kind == "LSTM":
                        direct_c = [c_for_h]
                        if t != last:
                            rec_c = new_c.clone()
                            rec_c.retain_grad()
                            c = rec_c
                        else:
                            c_fin = new_c.clone()
                            c_fin.retain_grad()
                            direct_c.append(c_fin)
                            loss = loss + (c_fin * g_c[index, b].double()).sum()
                        keep.append(((b, layer, direction, "c", t), new_c, rec_c, direct_c))
                dir_outs.append(torch.stack(outs))
            layer_out = torch.cat(dir_outs, dim=1)
            if layer < module.num_layers - 1 and masks is not None:
                layer_out = layer_out * masks[layer][b][:length].double()
            layer_in = layer_out
        loss = loss + (torch.sin(layer_in) * g_out[b][:length].double()).sum()
        loss.backward()
        for key, state, rec, directs in keep:
            total = state.grad
            carried = rec.grad if (rec is not None and rec.grad is not None) else torch.zeros_like(total)
            direct = sum((dd.grad if dd.grad is not None else torch.zeros_like(total)) for dd in directs)
            out[key] = (total, carried, direct)
    return out


def aggregate(per_sample, n_samples):
    """Mean over the active samples of the norms: {(layer, direction, state, t): (grad, carried, direct, batch)}."""
    sums = {}
    for (b, layer, direction, state, t), (total, carried, direct) in per_sample.items():
        key = (layer, direction, state, t)
        acc = sums.setdefault(key, [0.0, 0.0, 0.0, 0])
        acc[0] += total.norm().item()
        acc[1] += carried.norm().item()
        acc[2] += direct.norm().item()
        acc[3] += 1
    return {k: (v[0] / v[3], v[1] / v[3], v[2] / v[3], v[3]) for k, v in sums.items()}


def compare_tables(table, expected, rtol):
    """Assert the scope's timesteps rows equal the reference means."""
    assert len(table) == len(expected), f"{len(table)} rows, expected {len(expected)}"
    scale = max(max(v[0], v[1], v[2]) for v in expected.values())
    for row in table.itertuples():
        key = (row.layer, row.direction, row.state, row.t)
        assert key in expected, f"unexpected row {key}"
        grad, carried, direct, batch = expected[key]
        assert row.batch == batch, (key, row.batch, batch)
        got = np.array([row.grad_norm, row.carried_norm, row.direct_norm])
        want = np.array([grad, carried, direct])
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-3 * scale, err_msg=str(key))


def reference_loop(step, xs, h0, loss_fn):
    """Reference for a hand-written loop ``h_t = step(x_t, h_{t-1})``, float64.

    Each state gets ``retain_grad()`` and two clones: one for its recurrent use (its gradient:
    the carried part) and one for every other use (the direct part). ``loss_fn(states)`` gets
    the list of the latter and returns the loss. Returns {("h", t): (total, carried, direct)}
    as (B, S) float64 tensors.
    """
    # the initial state requires grad so that every state does, whatever the weights
    h = h0.detach().double().requires_grad_()
    keep, outs = [], []
    for t, x in enumerate(xs):
        new = step(x.detach().double(), h)
        new.retain_grad()
        h, out = new.clone(), new.clone()
        h.retain_grad()
        out.retain_grad()
        keep.append((("h", t), new, h, out))
        outs.append(out)
    loss_fn(outs).backward()
    zero = lambda v: torch.zeros_like(v)
    return {key: (value.grad, r.grad if r.grad is not None else zero(value), o.grad if o.grad is not None else zero(value))
            for key, value, r, o in keep}


def row_means(per_state):
    """{(state, t): (grad, carried, direct, batch)}: the batch mean of each part's row norms."""
    return {key: tuple(float(v.reshape(-1, v.shape[-1]).norm(dim=1).mean()) for v in parts)
            + (parts[0].reshape(-1, parts[0].shape[-1]).shape[0],)
            for key, parts in per_state.items()}


def assert_rows_match(table, expected, rtol, atol_scale=1e-3):
    """The scope's rows of one sequence (columns state, t) equal ``row_means`` of a reference."""
    assert len(table) == len(expected), f"{len(table)} rows, expected {len(expected)}"
    scale = max(max(v[:3]) for v in expected.values())
    for row in table.itertuples():
        key = (row.state, row.t)
        assert key in expected, f"unexpected row {key}"
        grad, carried, direct, batch = expected[key]
        assert row.batch == batch, (key, row.batch, batch)
        np.testing.assert_allclose([row.grad_norm, row.carried_norm, row.direct_norm], [grad, carried, direct],
                                   rtol=rtol, atol=rtol * atol_scale * scale, err_msg=str(key))
