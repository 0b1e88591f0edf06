"""A read-only stream over chosen byte ranges of one file, behind an optional prefix.

pandas.read_csv reads it like a file, so a table is parsed from exactly the committed rows of
the steps asked for (header first), without copying the file into memory.
"""

import io
from collections import deque


def merge_ranges(ranges):
    """Sorted (start, end) ranges with touching neighbours joined (fewer seeks)."""
    merged = []
    for start, end in sorted(ranges):
        if merged and start == merged[-1][1]:
            merged[-1] = (merged[-1][0], end)
        elif end > start:
            merged.append((start, end))
    return merged


class RangeStream(io.RawIOBase):
    def __init__(self, file_path, ranges, prefix=b""):
        self._handle = open(file_path, "rb")
        self._prefix = memoryview(prefix)
        self._ranges = deque(merge_ranges(ranges))
        self._left = 0  # bytes still to read in the current range

    def readable(self):
        return True

    def readinto(self, buffer):
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        while not self._left:
            if not self._ranges:
                return 0
            start, end = self._ranges.popleft()
            self._handle.seek(start)
            self._left = end - start
        n = self._handle.readinto(view[:min(len(view), self._left)])
        if not n:
            raise OSError(f"{self._handle.name} became shorter while it was read")
        self._left -= n
        return n

    def close(self):
        if not self.closed:
            self._handle.close()
        super().close()


def open_ranges(file_path, ranges, prefix=b"", buffer_size=1 << 20):
    """A buffered binary file object yielding ``prefix`` then the bytes of ``ranges``."""
    return io.BufferedReader(RangeStream(file_path, ranges, prefix), buffer_size=buffer_size)
