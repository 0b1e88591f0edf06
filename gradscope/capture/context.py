"""The capture context: what a route sees of the Scope during one forward call of a recorded step.

A route (routes.py) gets a ``Capture`` and nothing else of the Scope: the open step, the links
between calls, the jacobians flag, the custom cells' learned layouts, and the Scope's warning
and hook functions (hooks that do nothing once the step has closed or the scope has stopped).
"""

import weakref

import torch


class Capture:
    """What the capture routes see of the Scope during one forward call of a recorded step.

    Args:
        step: the open ``steps.Step``.
        links: the Scope's ``links.LinkTable`` (which returned state came from which call).
        jacobians: whether the routes keep what the state Jacobians need (``watch(jacobians=True)``).
        custom_layouts: the Scope's ``{custom cell name: (tensors returned, state slots)}``.
        warn: ``warn(key, message)``: one warning per key per Scope.
        hook: ``hook(step, tensor, fn)``: call ``fn(grad)`` with ``tensor``'s gradient while the
            step is open and the scope started.
        active: ``active()``: whether the scope is still started.
        reached: ``reached(step)``: a backward pass went through the step (it closes at its end).
        buffers: the Scope's ``buffers.BufferPool`` (working buffers kept between recorded
            steps), or None.
    """

    gate_stats = True

    def __init__(self, step, *, links, jacobians, custom_layouts, warn, hook, active, reached, buffers=None):
        self.step = step
        self.links = links
        self.jacobians = jacobians
        self.custom_layouts = custom_layouts
        self._warn = warn
        self._hook = hook
        self._active = active
        self._reached = reached
        self.buffers = buffers
        self.records = []

    def warn(self, key, message):
        self._warn(key, message)

    def add_call(self, record):
        self.records.append(record)
        self.step.add_call(record)

    def hook(self, tensor, fn):
        self._hook(self.step, tensor, fn)

    def live(self):
        """False once the step closed or the scope stopped: then nothing is recorded."""
        return not self.step.closed and self._active()

    def reached(self):
        """Tell the step clock a backward pass went through this step (it closes at its end)."""
        self._reached(self.step)

    def probe(self, leaf, record, layer, direction, state, part, rows):
        def fire(grad):
            record.add(layer, direction, state, part, grad, rows)
            record.probe_fired(layer, direction, state)

        self.hook(leaf, fire)

    def call_position(self, name, previous):
        """``(call index, first t)`` of a call of part ``name``: where ``previous`` (the
        CallRecord this call continues) left off, or a new call of this step from t = 0."""
        if previous is not None:
            return previous.call, previous.t_offset + previous.T
        return self.step.new_call_index(name), 0

    def continue_or_open(self, name, links, states, to_final_layout):
        """The "continue the sequence or open a new call" preamble of the stock routes.

        Args:
            name: the part's name.
            links: what ``self.links.find`` found for the call's initial states (None: none of
                them is a state an earlier call returned).
            states: the initial state tensors (h, or h and c).
            to_final_layout: maps a probe's gradient to the layout of the earlier call's
                final state.

        Returns:
            ``(states, call index, first t)``: the states with a link probe added where they
            continue an earlier call (else unchanged), and where this call sits in its sequence.
        """
        if links is None:
            return list(states), *self.call_position(name, None)
        states = self.continue_sequence(links, states, to_final_layout)
        return states, *self.call_position(name, links[0].record)

    def returned_state(self, record, state, internal, cell, squeeze):
        """The final state as the user gets it: a copy, so that its hook sees all of the user's
        uses and nothing of gradscope's own (the gradient of every use: the direct part plus,
        when the user passes it on to the next call, the carried part that call subtracts)."""
        user = (internal.squeeze(0 if cell else 1) if squeeze else internal).clone()
        size = internal.shape[-1]
        if cell:
            self.hook(user, lambda g: record.add_final("direct", state, g.reshape(1, -1, size)))
        else:
            self.hook(user, lambda g: record.add_final("direct", state, g.unsqueeze(1) if squeeze else g))
        self.links.add(user, record, state)
        return user

    def continue_sequence(self, links, tensors, to_final_layout):
        """Add a zero probe to each initial state that continues an earlier call. Its gradient is
        the part carried into that call's last step; it is moved from that step's direct part
        (where the returned tensor's hook put it, with all other uses) to its carried part."""
        out = []
        for link, tensor in zip(links, tensors):
            probe = torch.zeros_like(tensor, requires_grad=True)

            def fire(g, prev=link.record, state=link.state):
                g = to_final_layout(g)
                prev.add_final("carried", state, g)
                prev.add_final("direct", state, -g)

            self.hook(probe, fire)
            link.record.probe_leaves.append(weakref.ref(probe))
            out.append(tensor + probe)
        return out

    def abandon(self):
        for record in self.records:
            self.step.drop_call(record)
