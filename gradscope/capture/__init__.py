"""Capture: measuring a watched model while it trains. The Scope (gradscope/scope.py) uses only
the names below; everything else in this room is reached through them.

The map (one idea per file):
    discover.py        which parts of a model are watched (Part: kind "module", "cell", "custom")
    patch.py           swapping a part's forward while the scope is started, and back
    steps.py           Step and StepClock: when a step opens, is recorded, and closes
    context.py         Capture: what a route sees of the Scope during one forward call
    routes.py          the route table: per part kind, its meta description and its routes by mode
      module_call.py     a stock module's call as RNNBase.forward reads it (layout, initial state)
      unroll.py          exact route, nn.RNN/GRU/LSTM stepped one time step at a time,
      exact_steps.py       its step nodes: one autograd node per time step, parts from backward
      exact_chain.py       what one layer-direction's step nodes share (buffers, the last node's returns)
      buffers.py         the recorded steps' working buffers, kept from one recorded step to the next
      fast.py            fast route, per layer: on the CPU gradscope's own BPTT, elsewhere the fused
                         kernels, tapped;
      own_bptt.py          own BPTT of nn.RNN / nn.GRU layers (CPU)
      own_lstm_layer.py    own BPTT of nn.LSTM layers (CPU), with own_lstm.py, its reverse loop
      cpu_matmul.py        the own BPTT's products (oneDNN where it is faster)
      cpu_tanh.py          the own LSTM's tanh (numpy's, faster than torch's on the CPU)
      fast_adjoint.py      the tapped form's reverse recursion after the fused backward
      stock_cells.py     exact route, nn.*Cell (one time step per call)
      custom.py          exact route, custom cells (watch(cells=...)): measured at the boundary
      track.py, vjp.py   scope.track(h, label): hand-written loops, carried parts by a VJP
      gate_stats.py      gate statistics, the same on every route
    links.py           which returned state came from which call (a sequence over several calls)
    accumulate.py      CallRecord: per-step gradient parts of one call, reduced to norms
    forward_nonfinite.py  where the forward pass held NaN/Inf
    finish.py          a closed step -> the ``timesteps`` and ``gates`` rows
    measure.py         a closed step -> weight spectra, (opt-in) Jacobians and Lyapunov spectra
    weight_reads.py    watch(weights=...): checking the entries and reading them at step close
    unwatchable.py     models gradscope refuses (torch.compile'd) or cannot see into (TorchScript)

Adding a route: write ``route(ctx, part, original, args, kwargs)`` and add it to
``routes.KINDS`` (a new part kind also gets its ``describe``).
"""

from gradscope.capture.buffers import BufferPool
from gradscope.capture.context import Capture
from gradscope.capture.discover import Part, find_parts
from gradscope.capture.finish import timestep_and_gate_tables
from gradscope.capture.forward_nonfinite import forward_nonfinite_table
from gradscope.capture.links import LinkTable
from gradscope.capture.measure import jacobian_tables, spectra_job
from gradscope.capture.module_call import NotSteppable
from gradscope.capture.patch import ForwardPatch, watched_by
from gradscope.capture.routes import describe, part_routes, route_for
from gradscope.capture.steps import StepClock
from gradscope.capture.unwatchable import refuse_compiled, scripted_hint
from gradscope.capture.weight_reads import check_weights, labelled_weights, weight_reads

__all__ = ["BufferPool", "Capture", "ForwardPatch", "LinkTable", "NotSteppable", "Part", "StepClock", "check_weights", "describe",
           "find_parts", "forward_nonfinite_table", "jacobian_tables", "labelled_weights", "part_routes",
           "refuse_compiled", "route_for", "scripted_hint", "spectra_job", "timestep_and_gate_tables", "watched_by", "weight_reads"]
