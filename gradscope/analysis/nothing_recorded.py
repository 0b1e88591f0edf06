"""The state "nothing recorded": a source with no recorded step has no verdict to give, and
saying OK about it would pass a gate that measured nothing (issue 15 item 7)."""

from __future__ import annotations

from typing import Optional

import pandas as pd

from gradscope.analysis.diagnosis import Finding

NO_STEPS_ADVICE = ("Make the watched code (the `with gradscope.watch(model)` block, or the "
                   "step() of a `gradscope check` TARGET) compute a loss from the watched "
                   "module's output and call loss.backward() with gradients enabled; with "
                   "every=N, steps 0, N, 2N, ... are recorded.")


def recorded_steps(*tables: Optional[pd.DataFrame]) -> int:
    """How many distinct steps the tables hold rows of.

    Args:
        tables: DataFrames with a ``step`` column (None or empty ones count nothing).
    Returns:
        The number of distinct step numbers over all of them.
    """
    steps = set()
    for table in tables:
        if table is not None and len(table) and "step" in table:
            steps.update(int(step) for step in table["step"].unique())
    return len(steps)


def no_steps_finding(source) -> Finding:
    """The error finding for a source without a single recorded step, saying why when the
    source can tell (a live Scope counts the steps that closed).

    Args:
        source: the Scope, Run or custom source analyze was given.
    Returns:
        A Finding of kind ``no_steps``, severity ``error``, about the whole run (module,
        layer and direction None).
    """
    seen = getattr(source, "steps_seen", None)
    evidence = {"recorded_steps": 0}
    if isinstance(seen, int) and seen > 0:
        evidence["steps_seen"] = seen
        why = (f"{seen} step(s) closed but none was recorded: the GradscopeWarning(s) raised "
               "during the run say why (a backward pass over only some inputs, or a "
               "measurement that failed)")
    elif isinstance(seen, int):
        evidence["steps_seen"] = 0
        why = ("no training step closed while the model was watched: a step closes when a "
               "backward pass goes through a watched module, and backward() never did (it "
               "was not called, ran under torch.no_grad(), or the loss did not depend on the "
               "watched module)")
    else:
        why = ("the run holds no recorded step: backward() never went through a watched "
               "module while it was watched, or the process ended before the first step "
               "closed")
    return Finding(kind="no_steps", severity="error", module=None, layer=None, direction=None,
                   message=f"nothing was measured, so there is no verdict: {why}",
                   evidence=evidence, advice=NO_STEPS_ADVICE)
