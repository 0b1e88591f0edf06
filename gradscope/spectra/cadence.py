"""Which recorded steps get weight spectra (``watch(spectra_every=...)``).

The spectra of a recurrent layer cost more than a training step of it (for a 256-unit LSTM on
two CPU cores: ~0.2 s of LAPACK against a ~0.12 s step), while the weights change slowly. So by
default (``spectra_every="auto"``) every ``AUTO_INTERVAL``-th recorded step gets them, the first
one included, and the last recorded step gets them when the scope stops: the spectra beside the
latest verdict are those of its own step. The weights of every recorded step in between are
copied at its close (cheap), so the last one's spectra are of the weights that step used.

A whole number N or a schedule ``step -> bool`` keeps its plain meaning: the recorded steps
whose number it picks, and no others.
"""

from gradscope.schedules import check_every

AUTO = "auto"
# measured (benchmarks/fast_route.py --spectra): the spectra of every 50th recorded step add
# at most ~3% to a recorded step of a 256-unit RNN, GRU or LSTM on a 2-core CPU
AUTO_INTERVAL = 50


def check_spectra_every(spectra_every):
    """``"auto"``, a whole number >= 1 or a schedule; raises as ``check_every`` does."""
    if isinstance(spectra_every, str) and spectra_every == AUTO:
        return spectra_every
    if isinstance(spectra_every, str):
        raise ValueError(f"gradscope.watch(spectra_every={spectra_every!r}): spectra_every must be 'auto' "
                         f"(every {AUTO_INTERVAL}th recorded step and the last), a whole number >= 1 or a "
                         "schedule step -> bool")
    return check_every(spectra_every, "spectra_every")


class SpectraCadence:
    """Decides, step by step, whether a recorded step's spectra are computed, and keeps the
    spectra job of the latest recorded step that was passed over (``"auto"`` only)."""

    def __init__(self, spectra_every):
        self.spectra_every = spectra_every
        self._schedule = None if spectra_every == AUTO else check_every(spectra_every, "spectra_every")
        self._recorded = 0
        self._passed_over = None  # (step number, job) of the latest recorded step without spectra

    @property
    def keeps_last(self):
        """True where a recorded step passed over still copies its weights (for ``finish``)."""
        return self._schedule is None

    def due(self, number):
        """Whether recorded step ``number`` gets its spectra now. Call once per recorded step."""
        if self._schedule is not None:
            return bool(self._schedule(number))
        due = self._recorded % AUTO_INTERVAL == 0
        self._recorded += 1
        if due:
            self._passed_over = None
        return due

    def pass_over(self, number, job):
        """Keep ``job`` (the spectra of recorded step ``number``, from a copy of its weights)
        in case it is the last recorded step."""
        self._passed_over = (number, job)

    def finish(self):
        """``(number, job)`` of the last recorded step if it has no spectra yet, else None."""
        passed_over, self._passed_over = self._passed_over, None
        return passed_over
