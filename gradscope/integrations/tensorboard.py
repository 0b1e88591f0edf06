"""``log(scope, writer)``: one recorded step of a Scope or Run into TensorBoard.

What is written (docs/integrations.md):
  - every ``metrics()`` value as a scalar under its key, at ``global_step``;
  - the per-timestep curve as an image, tag ``gradscope/<name>/grad_norm_per_t``;
  - the same curve as scalars, x = t: tag
    ``gradscope/<module>/l<layer>/<direction>/grad_norm_per_t/<state>/step<N>``.
"""

from __future__ import annotations

import os
from typing import Dict, Optional

from gradscope.integrations._extras import require
from gradscope.integrations.curve import curve_figure, to_rgb
from gradscope.metrics import PREFIX, ROOT_NAME, metrics


def log(scope, writer, step: Optional[int] = None, *, global_step: Optional[int] = None,
        image: bool = True) -> Dict[str, float]:
    """Write one recorded step's numbers and per-timestep curve to TensorBoard.

    Args:
        scope: a ``Scope`` (``gradscope.watch``) or a loaded ``Run`` (``gradscope.load``).
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (or any object with its
            ``add_scalar`` / ``add_image``), or a log folder path: a SummaryWriter is opened on it
            and closed when done.
        step: the recorded step to write; None: the latest. Nothing recorded yet: nothing is
            written.
        global_step: the x-axis value of the scalars and the image; None: the gradscope step
            number (pass ``trainer.global_step`` or your optimizer step to line it up with the
            rest of your logs).
        image: also write the curve as an image (rendered with matplotlib's Agg canvas).

    Returns:
        The ``metrics()`` dict that was written.
    """
    if isinstance(writer, (str, os.PathLike)):
        tensorboard = require("torch.utils.tensorboard", "tensorboard", "gradscope.integrations.tensorboard")
        with tensorboard.SummaryWriter(os.fspath(writer)) as opened:
            return log(scope, opened, step, global_step=global_step, image=image)
    numbers = metrics(scope, step)
    recorded = list(scope.steps())
    if not recorded:
        return numbers
    chosen = int(step) if step is not None else recorded[-1]
    at = chosen if global_step is None else int(global_step)
    for key, value in numbers.items():
        writer.add_scalar(key, value, at)
    rows = scope.timesteps(steps=[chosen])
    for (module, layer, direction, state), part in rows.groupby(["module", "layer", "direction", "state"], sort=True):
        tag = f"{PREFIX}/{module or ROOT_NAME}/l{layer}/{direction}/grad_norm_per_t/{state}/step{chosen}"
        curve = part.groupby("t", sort=True)["grad_norm"].mean()
        for t, value in curve.items():
            writer.add_scalar(tag, float(value), int(t))
    if image and len(rows):
        name = getattr(scope, "name", "") or ""
        figure = curve_figure(rows, chosen, name)
        writer.add_image(f"{PREFIX}/grad_norm_per_t", to_rgb(figure), at, dataformats="CHW")
    return numbers

