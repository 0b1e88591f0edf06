"""One call of nn.RNN / nn.GRU / nn.LSTM as ``RNNBase.forward`` reads it: the input layout, the
initial state, and where the call sits in its sequence. Shared by the exact and the fast route."""

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence

from gradscope.cells import cell_kind


class NotSteppable(Exception):
    """This call has nothing to measure (an empty batch): run the module's own code, silently."""


class InputLayout:
    """The input as ``RNNBase.forward`` handles it: packed or padded, batched or not, batch first
    or not. ``seq`` is time-major (T, B, F), or the packed data (N, F); ``bs`` the active rows
    per time step."""

    def __init__(self, module, input):
        self.batch_first = module.batch_first
        self.packed = isinstance(input, PackedSequence)
        if self.packed:
            data, self.batch_sizes, self.sorted_indices, self.unsorted_indices = input
            self.bs = self.batch_sizes.tolist()  # batch_sizes always live on the CPU: no device sync
            self.batch, self.is_batched, self.seq = self.bs[0], True, data
            self.checked_input = data
            return
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(module).__name__}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        self.is_batched = input.dim() == 3
        self.batch_dim = 0 if module.batch_first else 1
        if not self.is_batched:
            input = input.unsqueeze(self.batch_dim)
        self.checked_input = input
        self.seq = input.transpose(0, 1) if module.batch_first else input  # time-major, as ATen does
        self.batch = self.seq.shape[1]
        self.bs = [self.batch] * self.seq.shape[0]
        self.batch_sizes = self.sorted_indices = self.unsorted_indices = None

    def rows(self):
        """The input as flat rows (N, F), time step after time step."""
        if self.packed:
            return self.seq
        return self.seq.reshape(self.seq.shape[0] * self.batch, self.seq.shape[2])

    def output(self, values):
        """The last layer's output, flat rows (N, F) or time-major (T, B, F), as the module
        returns it."""
        if self.packed:
            return PackedSequence(values, self.batch_sizes, self.sorted_indices, self.unsorted_indices)
        if values.dim() == 2:
            values = values.view(len(self.bs), self.batch, values.shape[1])
        if self.batch_first:
            values = values.transpose(0, 1)
        if not self.is_batched:
            values = values.squeeze(self.batch_dim)
        return values

    def user_order(self, final):
        """A final state (layers * directions, B, S) back in the user's batch order."""
        return final if self.unsorted_indices is None else final.index_select(1, self.unsorted_indices)


class ModuleCall:
    """One call of a stock module, opened: its layout, initial states (sorted batch order, a link
    probe added where they continue an earlier call) and place in its sequence.

    Args:
        ctx: the capture context (context.Capture).
        name: the part's name.
        module: the nn.RNN, nn.GRU or nn.LSTM.
        input: the call's input (a tensor or a PackedSequence).
        hx: the call's initial state as the user passed it (None: zeros).

    Raises:
        NotSteppable: an empty batch.
        ValueError, RuntimeError: input or state shapes the module itself refuses (the same
            checks, in the same order, as its forward).
    """

    def __init__(self, ctx, name, module, input, hx):
        self.module = module
        self.kind = cell_kind(module)
        self.is_lstm = self.kind == "LSTM"
        self.directions = ("forward", "reverse")[:2 if module.bidirectional else 1]
        self.layers = module.num_layers
        self.size_h = module.proj_size if module.proj_size > 0 else module.hidden_size
        self.size_c = module.hidden_size
        self.states = {"h": self.size_h, "c": self.size_c} if self.is_lstm else {"h": self.size_h}
        self.layout = layout = InputLayout(module, input)
        if sum(layout.bs) == 0:
            raise NotSteppable("empty batch")
        links = ctx.links.find(hx, name)
        hx = self._initial_state(module, hx)
        module.check_forward_args(layout.checked_input, hx, layout.batch_sizes)
        # the user passed on the final state of an earlier call: the same sequence goes on
        states, self.call_index, self.t_offset = ctx.continue_or_open(
            name, links, hx if self.is_lstm else (hx,), lambda g: g)
        hx = tuple(states) if self.is_lstm else states[0]
        if layout.sorted_indices is not None:
            hx = module.permute_hidden(hx, layout.sorted_indices)
        self.h0, self.c0 = (hx[0], hx[1]) if self.is_lstm else (hx, None)

    def next_layer_input(self, layer, layer_out):
        """What the layer above gets: the output, with dropout between layers in training mode
        (as ATen applies it)."""
        module = self.module
        if layer < self.layers - 1 and module.dropout > 0 and module.training:
            return F.dropout(layer_out, module.dropout, True)
        return layer_out

    def _initial_state(self, module, hx):
        """``hx`` batched (zeros where None), as the module's forward makes it."""
        layout, seq = self.layout, self.layout.seq
        if hx is None:
            shape = (self.layers * len(self.directions), layout.batch)
            zeros_h = torch.zeros(*shape, self.size_h, dtype=seq.dtype, device=seq.device)
            if not self.is_lstm:
                return zeros_h
            return zeros_h, torch.zeros(*shape, self.size_c, dtype=seq.dtype, device=seq.device)
        if layout.packed:
            return hx
        parts = hx if self.is_lstm else (hx,)
        want = 3 if layout.is_batched else 2
        if any(p.dim() != want for p in parts):
            kind_txt = "batched 3-D" if layout.is_batched else "unbatched 2-D"
            raise RuntimeError(f"For {kind_txt} input, hx should also be {want}-D but got "
                               f"{[p.dim() for p in parts]}-D tensors")
        if not layout.is_batched:
            parts = tuple(p.unsqueeze(1) for p in parts)
        return parts if self.is_lstm else parts[0]
