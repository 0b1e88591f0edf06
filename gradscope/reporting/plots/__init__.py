"""One file per figure kind. Each ``figures(run)`` / ``compare_figures(runs)`` yields ``Plot``s
and yields nothing when its data is missing (no spectra stored, no Jacobians recorded...)."""

from gradscope.reporting.plots import (gain, gain_history, gates, heatmap, jacobians, lyapunov, spectra_history,
                                    spectrum, timesteps)
from gradscope.reporting.plots.base import Plot

# page order: what answers "does the gradient reach back?" first, then why
SINGLE = (gain.figures, gain_history.figures, timesteps.figures, heatmap.figures, spectrum.figures,
          spectra_history.figures, jacobians.figures, lyapunov.figures, gates.figures)
COMPARE = (gain.compare_figures, gain_history.compare_figures, timesteps.compare_figures, heatmap.compare_figures,
           spectrum.compare_figures, jacobians.compare_figures, lyapunov.compare_figures)

__all__ = ["Plot", "SINGLE", "COMPARE"]
