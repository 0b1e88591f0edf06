"""Step bookkeeping: a step opens at the first grad-enabled forward of a watched part and closes
when a backward pass has gone through it (at the end of that backward pass)."""

import torch


class Step:
    def __init__(self, number, recorded):
        self.number = number
        self.recorded = recorded
        self.calls = []  # CallRecord, in call order
        self.tracks = {}  # label -> TrackRecord
        self._next_call = {}  # module name -> next call index
        self.queued = False
        self.closed = False

    def new_call_index(self, module):
        index = self._next_call.get(module, 0)
        self._next_call[module] = index + 1
        return index


def _queue_at_end_of_backward(callback):
    # The engine runs queued callbacks once the current backward pass has finished; DDP uses
    # the same hook to know that all gradients are in.
    torch.autograd.Variable._execution_engine.queue_callback(callback)


class StepClock:
    """Counts steps, decides which are recorded (every N-th), and closes them after backward."""

    def __init__(self, every, on_close):
        self.every = every
        self.on_close = on_close
        self.count = 0  # steps closed so far
        self.current = None

    def open(self):
        """The open step, opening one if needed."""
        if self.current is None:
            recorded = self.every > 0 and self.count % self.every == 0
            self.current = Step(self.count, recorded)
        return self.current

    def reached(self, step):
        """A hook of ``step`` fired inside a backward pass: close the step when it ends."""
        if step.queued or step.closed or step is not self.current:
            return
        step.queued = True
        _queue_at_end_of_backward(lambda: self._close(step))

    def _close(self, step):
        if step.closed or step is not self.current:
            return
        step.closed = True
        self.current = None
        self.count += 1
        self.on_close(step)

    def discard(self):
        """Forget the open step (the scope stops before any backward reached it)."""
        if self.current is not None:
            self.current.closed = True
        self.current = None
