"""Working buffers of a recorded step, kept for the next recorded step (one pool per Scope).

Why: the exact route's big buffers (gate activations, gate gradients, carried parts: tens of MB
at B=32, H=256, T=200) were fresh memory at every recorded step, because the CPU allocator hands
big blocks back to the system when they are freed. The first write to a fresh 4 KB page costs a
page fault, and the step nodes pay it a few rows at a time. A GRU step then spent ~20 ms of
~130 ms in page faults, and a 64 KB copy per time step took 35 us instead of 9 us.

A buffer goes out again only once nothing else holds its memory: the pool checks the storage's
use count, so a graph kept with ``retain_graph=True`` (whose nodes hold views of a buffer) keeps
its buffer to itself. Buffers are handed out as views of a flat block at least as large as asked
for, so steps whose sequence lengths vary reuse them too. ``release_unused`` (called when a step
closes) frees what that step did not use, so the pool never holds more than one step's working
set; a Scope clears it on the first step that is not recorded and when it stops, so nothing is
held across off-schedule steps or after ``watch`` ends.
"""

import torch

_use_count = getattr(torch._C, "_storage_Use_Count", None)
# smaller buffers come from the allocator's own free lists (no fresh pages): a cell stepped in a
# user's loop asks for a few small ones per call, which the pool would only have to search
MIN_POOLED_BYTES = 1 << 20


def empty(pool, shape, like):
    """An uninitialised tensor of ``shape`` like ``like``: from ``pool`` (a BufferPool), or a
    plain allocation where there is none (nothing is watching, or the step is not live)."""
    return like.new_empty(shape) if pool is None else pool.empty(shape, like)


def _holders(tensor):
    return _use_count(tensor.untyped_storage()._cdata)


class BufferPool:
    """Flat blocks by (dtype, device); ``empty`` hands out an uninitialised view of a free one."""

    def __init__(self):
        self._blocks = []  # flat tensors owned by the pool
        self._used = set()  # ids of blocks handed out since the last release_unused
        self.blocks_made = 0  # how often no free block would do
        # what a block's storage counts when nothing but the pool holds it
        self._idle = _holders(torch.empty(1)) if _use_count is not None else None

    def empty(self, shape, like, dtype=None):
        """An uninitialised tensor of ``shape`` (dtype and device of ``like``, or ``dtype``)."""
        dtype = dtype or like.dtype
        size = 1
        for n in shape:
            size *= n
        if size * dtype.itemsize < MIN_POOLED_BYTES:
            return like.new_empty(shape, dtype=dtype)
        block = self._free_block(size, dtype, like.device)
        if block is None:
            if self._idle is None:  # no way to tell when a block is free: plain allocation
                return like.new_empty(shape, dtype=dtype)
            block = like.new_empty(size, dtype=dtype)
            self._blocks.append(block)
            self.blocks_made += 1
        self._used.add(id(block))
        return block[:size].view(shape)

    def _free_block(self, size, dtype, device):
        best = None
        for block in self._blocks:
            if (block.dtype == dtype and block.device == device and block.numel() >= size
                    and _holders(block) <= self._idle and (best is None or block.numel() < best.numel())):
                best = block
        return best

    def release_unused(self):
        """Drop the blocks not handed out since the last call."""
        self._blocks = [block for block in self._blocks if id(block) in self._used]
        self._used = set()

    def clear(self):
        self._blocks = []
        self._used = set()

    def held_bytes(self):
        return sum(block.numel() * block.element_size() for block in self._blocks)
