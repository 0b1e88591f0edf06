"""Step bookkeeping: a step opens at the first grad-enabled forward of a watched part and closes
when a backward pass has gone through it (at the end of that backward pass)."""

import weakref

import torch


class Step:
    def __init__(self, number, recorded):
        self.number = number
        self.recorded = recorded
        # Calls are held weakly until a gradient reaches them: a grad-enabled forward that never
        # sees a backward (an evaluation without no_grad) then keeps nothing alive.
        self._calls = []  # weakref to CallRecord, in call order
        self.received = []  # CallRecord that got a gradient, in the order they got it
        self.tracks = {}  # label -> TrackRecord
        self.spoiled = set()  # modules whose numbers of this step cannot be told apart (not recorded)
        self.closed_calls = None  # calls() as the step's tables were made from it (see close_calls)
        self._next_call = {}  # module name -> next call index
        self.queued = False
        self.closed = False

    def add_call(self, record):
        record.order = len(self._calls)
        record.on_first_gradient = lambda: self.received.append(record)
        self._calls.append(weakref.ref(record))

    def drop_call(self, record):
        record.closed = True
        if record in self.received:
            self.received.remove(record)

    def calls(self):
        """The calls that received a gradient, in call order, with ``call`` renumbered 0, 1, ...
        per module among them (a forward that no backward reached is not a sequence of it)."""
        # a module that a partial backward pass (torch.autograd.grad) went through is left out
        # whole: the calls it could still measure would be a misleading fragment of the sequence
        skipped = {r.module for r in self.received if r.restricted} | self.spoiled
        records = sorted((r for r in self.received if r.module not in skipped), key=lambda r: r.order)
        ranks = {}
        for record in records:
            ids = ranks.setdefault(record.module, {})
            ids.setdefault(record.call, len(ids))
        for record in records:
            record.call = ranks[record.module][record.call]
        return records

    def close_calls(self):
        """Fix the calls the step's tables are made of (``calls()`` once, at close) and return them."""
        for record in self.received:
            record.settle()  # a call found incomplete leaves its module out whole
        self.closed_calls = self.calls()
        return self.closed_calls

    def measured_calls(self):
        """The calls fixed at close, or (before that, or where none were) ``calls()`` now."""
        return self.closed_calls or self.calls()

    def new_call_index(self, module):
        index = self._next_call.get(module, 0)
        self._next_call[module] = index + 1
        return index


_current_graph_task_id = getattr(torch._C, "_current_graph_task_id", None)


def graph_task_id():
    """The id of the backward pass running on this thread (-1 outside one; None if unknown)."""
    return _current_graph_task_id() if _current_graph_task_id is not None else None


def queue_at_end_of_backward(callback):
    # The engine runs queued callbacks once the current backward pass has finished; DDP uses
    # the same hook to know that all gradients are in.
    torch.autograd.Variable._execution_engine.queue_callback(callback)


class StepClock:
    """Counts steps, decides which are recorded (``schedule(number)``), and closes them after
    backward.

    Without an optimizer a step ends with the first backward pass that reaches it. With
    ``optimizer_steps=True`` a step is everything between two ``optimizer.step()`` calls
    (``optimizer_stepped`` is called after each): only its first forward-and-backward is
    measured (the first closure call of LBFGS, the first micro-batch of gradient
    accumulation); the rest of it runs the model's own code, and the count goes on when the
    optimizer steps.
    """

    def __init__(self, schedule, on_close, optimizer_steps=False, on_drop=None):
        self.schedule = schedule
        self.on_close = on_close
        self.optimizer_steps = optimizer_steps
        self.on_drop = on_drop  # called with a step dropped because its backward pass raised
        self.count = 0  # steps closed so far
        self.current = None
        self._measured = False  # optimizer_steps: this step's first backward has been through

    def open(self):
        """The open step, opening one if needed."""
        if self.current is not None and self._backward_raised(self.current):
            self._drop(self.current)
        if self.current is None:
            recorded = not self._measured and bool(self.schedule(self.count))
            self.current = Step(self.count, recorded)
        return self.current

    def reached(self, step):
        """A hook of ``step`` fired inside a backward pass: close the step when it ends."""
        if step.queued or step.closed or step is not self.current:
            return
        step.queued = True
        queue_at_end_of_backward(lambda: self._close(step))

    def _close(self, step):
        if step.closed or step is not self.current:
            return
        step.closed = True
        self.current = None
        if self.optimizer_steps:
            self._measured = True  # the count goes on at optimizer.step()
        else:
            self.count += 1
        self.on_close(step)

    @staticmethod
    def _backward_raised(step):
        # A backward pass that reached the step queued its close; the engine runs queued
        # callbacks only when the pass ends without an error. Still queued and open outside any
        # backward pass: that pass raised (in a user's hook, a KeyboardInterrupt, ...).
        return step.queued and not step.closed and graph_task_id() == -1

    def _drop(self, step):
        """Forget a step whose backward pass raised: its numbers are partial, so it is neither
        recorded nor counted (the next step takes its number), and later steps close normally."""
        step.closed = True
        self.current = None
        if self.on_drop is not None:
            self.on_drop(step)

    def optimizer_stepped(self):
        """``optimizer.step()`` returned: the step ends (a forward no backward reached is
        dropped) and the next one begins."""
        self.discard()
        self.count += 1
        self._measured = False

    def discard(self):
        """Forget the open step (the scope stops before any backward reached it)."""
        if self.current is not None:
            self.current.closed = True
        self.current = None
