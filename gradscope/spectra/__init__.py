"""Spectra of the recurrent weights, and of the state-to-state Jacobians.

- ``blocks``: the weight blocks of a cell (per gate and stacked) and their summaries, by LAPACK
  (full route) or by self-checking Krylov methods (fast route).
- ``krylov``: the Lanczos and Arnoldi solvers the fast route uses.
- ``workers``: the blocks of one recorded step on CPU worker threads.
- ``background``: whole recorded steps on one background thread (``watch(spectra="background")``).
- ``jacobians``: per-step Jacobian norms and the Lyapunov spectrum (``jacobians=True``).
"""

from gradscope.spectra.blocks import (block_spectrum, block_summary, full_spectrum, labelled_records,
                                      recurrent_blocks, spectra_records, spectrum_value)
from gradscope.spectra.workers import spectra_of_parts

__all__ = ["block_spectrum", "block_summary", "full_spectrum", "labelled_records", "recurrent_blocks",
           "spectra_of_parts", "spectra_records", "spectrum_value"]
