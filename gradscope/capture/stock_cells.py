"""The exact route for nn.RNNCell / nn.GRUCell / nn.LSTMCell stepped in a user's loop.

Each call is one time step: the same math as ATen's cells, on the module's own weights, with the
LSTM probe where c_t enters h_t. The returned state is a copy whose hook sees all of the user's
uses; a next call that receives it continues the sequence and measures the carried part.
"""

import torch
import torch.nn.functional as F

from gradscope.capture.accumulate import CallRecord
from gradscope.capture.module_call import NotSteppable
from gradscope.capture.unroll import run_direction
from gradscope.cells import cell_kind, module_weights


def exact_cell_forward(ctx, name, module, input, hx=None):
    """Run the cell ``module`` on ``input`` (one time step) with its own weights, recording into
    the capture context ``ctx``."""
    kind = cell_kind(module)
    is_lstm = kind == "LSTM"
    label = type(module).__name__
    if input.dim() not in (1, 2):
        raise ValueError(f"{label}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    is_batched = input.dim() == 2
    if not is_batched:
        input = input.unsqueeze(0)
    batch = input.shape[0]
    if batch == 0:
        raise NotSteppable("empty batch")

    links = ctx.links.find(hx, name)
    if hx is None:
        zeros = torch.zeros(batch, module.hidden_size, dtype=input.dtype, device=input.device)
        states_in = [zeros, zeros] if is_lstm else [zeros]
    else:
        given = list(hx) if is_lstm else [hx]
        for index, value in enumerate(given):
            if value.dim() not in (1, 2):
                raise ValueError(f"{label}: Expected hidden{f'[{index}]' if is_lstm else ''} to be 1D or 2D, "
                                 f"got {value.dim()}D instead")
        states_in = given if is_batched else [v.unsqueeze(0) for v in given]
    # the user passed on the state an earlier call returned: the same sequence goes on
    states_in, call_index, t_offset = ctx.continue_or_open(
        name, links, states_in, lambda g: g.reshape(1, -1, g.shape[-1]))
    states = {"h": module.hidden_size, "c": module.hidden_size} if is_lstm else {"h": module.hidden_size}
    record = CallRecord(name, kind, call_index, t_offset, [batch], 1, ("forward",), states, input.device)
    ctx.add_call(record)

    weights = module_weights(module)
    record.weights[(0, "forward")] = {k: (v.detach() if v is not None else None) for k, v in weights.items()}
    xw = F.linear(input, weights["w_ih"], weights["b_ih"])
    _, new_h, new_c = run_direction(ctx, record, kind, 0, "forward", xw, [batch], states_in[0],
                                    states_in[1] if is_lstm else None, weights)
    user_h = ctx.returned_state(record, "h", new_h, cell=True, squeeze=not is_batched)
    if not is_lstm:
        return user_h
    return user_h, ctx.returned_state(record, "c", new_c, cell=True, squeeze=not is_batched)
