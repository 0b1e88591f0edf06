"""A tiny text progress bar on stderr (no dependency): one line per model, redrawn in place."""

import sys
import time


class ProgressBar:
    """``bar.update(done, loss)`` redraws ``label [#####.....] done/total loss``; ``close()`` ends the line.

    On a terminal the line is redrawn at most every ``interval`` seconds; elsewhere (logs, CI)
    it prints a line at each tenth so the log stays short.
    """

    def __init__(self, label, total, stream=None, width=30, interval=0.1):
        self.label, self.total, self.width, self.interval = label, max(int(total), 1), width, interval
        self.stream = sys.stderr if stream is None else stream
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._drawn_at = -float("inf")
        self._tenths = -1

    def update(self, done, loss=None):
        now = time.perf_counter()
        finished = done >= self.total
        if self.live:
            if finished or now - self._drawn_at >= self.interval:
                self._drawn_at = now
                self.stream.write("\r" + self._line(done, loss, now))
                self.stream.flush()
        else:
            tenth = done * 10 // self.total
            if tenth > self._tenths:
                self._tenths = tenth
                self.stream.write(self._line(done, loss, now) + "\n")
                self.stream.flush()

    def close(self):
        if self.live:
            self.stream.write("\n")
            self.stream.flush()

    def _line(self, done, loss, now):
        filled = self.width * min(done, self.total) // self.total
        bar = "#" * filled + "." * (self.width - filled)
        text = f"{self.label:<5} [{bar}] {done}/{self.total} {now - self.start:5.1f}s"
        if loss is not None:
            text += f" loss {loss:.4f}"
        return text
