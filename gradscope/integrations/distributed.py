"""gradscope under ``torch.distributed``: each rank measures its own replica; when a recorded step
closes, its rows are gathered from every rank in one collective call and reduced to one row per
(step, module, call, layer, direction, state, t); rank 0 alone writes the run folder.

Reduction (docs/integrations.md): ``timesteps``: grad_norm, carried_norm, direct_norm are the
mean over the ranks that have the row, ``finite_grad_norm`` the mean over the ranks that have a
finite sequence there, ``nonfinite`` and ``batch`` the sum. ``gates``: ``count``
summed, ``mean``/``low``/``high`` count-weighted. Spectra are of weights DDP keeps equal on
every rank and are rank 0's; ``jacobians``/``lyapunov`` are rank 0's own.

No collective can hang on gradscope's account: every rank takes the same every/schedule
decision from its own step count, a recorded step always joins the collective (with no rows
if its measurement failed), and the collective runs on the default process group, so it gives
up after that group's timeout (``init_process_group(timeout=...)``) and raises out of
``loss.backward()`` on a rank whose peers left, raised, or are at another step.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import pandas as pd
import torch.distributed as dist
import torch.nn as nn

from gradscope.records import TABLES, frame

REDUCED = ("timesteps", "gates")
_KEYS = {table: [c for c in TABLES[table] if c not in values] for table, values in (
    ("timesteps", ("batch", "grad_norm", "carried_norm", "direct_norm", "nonfinite", "finite_grad_norm")),
    ("gates", ("count", "mean", "low", "high")))}


class UnsupportedParallelError(TypeError):
    """The model is wrapped in a parallel scheme gradscope cannot watch (DataParallel, FSDP)."""


def step_reducer(model: nn.Module) -> Optional["StepReducer"]:
    """The reducer a Scope of ``model`` uses: None in a single process (or a group of one rank).

    Args:
        model: the model given to ``gradscope.watch``.

    Returns:
        A ``StepReducer`` on the default process group when torch.distributed is initialized
        with more than one rank, else None.

    Raises:
        UnsupportedParallelError: ``model`` is, or holds, a DataParallel or FSDP module.
    """
    refuse_unsupported(model)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return StepReducer()


def refuse_unsupported(model: nn.Module) -> None:
    """Raise for DataParallel and FSDP, saying what to do instead."""
    for name, module in model.named_modules():
        where = f"{name or 'the model'} ({type(module).__name__})"
        if isinstance(module, nn.DataParallel):
            raise UnsupportedParallelError(
                f"gradscope.watch: {where} is nn.DataParallel, which copies the model onto each GPU at "
                "every forward, so gradscope cannot follow the copies. Watch the model on one device "
                "(gradscope.watch(model.module)), or train with DistributedDataParallel, which gradscope "
                "supports (each rank watches its replica; see docs/integrations.md).")
        if _is_fsdp(module):
            raise UnsupportedParallelError(
                f"gradscope.watch: {where} is sharded with FSDP, so no rank holds the full recurrent "
                "weights gradscope steps through and measures. Use DistributedDataParallel for the "
                "recurrent part (or watch an unsharded copy on one process).")


def _is_fsdp(module):
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # a torch built without distributed support has no FSDP either
        return False
    if isinstance(module, FullyShardedDataParallel):
        return True
    try:
        from torch.distributed.fsdp import FSDPModule  # fully_shard (FSDP2)
    except ImportError:
        return False
    return isinstance(module, FSDPModule)


class StepReducer:
    """Reduces a closed step's tables over the ranks of the default process group."""

    def __init__(self):
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.writes = self.rank == 0  # rank 0 alone writes the run folder

    def describe(self) -> dict:
        """What a run folder's meta records about the reduction."""
        return {"world_size": self.world_size, "backend": str(dist.get_backend()), "reduced": list(REDUCED),
                "rank_0_only": ["spectra", "jacobians", "lyapunov"]}

    def __call__(self, step: int, tables: Dict[str, pd.DataFrame]) -> Dict[str, pd.DataFrame]:
        """``tables`` with ``timesteps`` and ``gates`` reduced over every rank.

        Every rank must call this once per recorded step, in the same order.

        Args:
            step: the closed step's number (every rank must be at the same step).
            tables: this rank's tables of the step (a missing table counts as no rows).

        Returns:
            The same dict with the reduced tables in place of this rank's.
        """
        mine = {table: tables.get(table, frame(table)) for table in REDUCED}
        gathered = [None] * self.world_size
        try:
            dist.all_gather_object(gathered, (int(step), mine))  # one collective call per step
        except Exception as err:
            raise RuntimeError(
                f"gradscope: rank {self.rank} could not gather step {step}'s gradient norms from the other "
                f"ranks ({type(err).__name__}: {err}). Another rank raised, left, or did not close this "
                "step within the process group's timeout; every rank must run the same forward and "
                "backward passes under gradscope.watch.") from err
        steps = [s for s, _ in gathered]
        if len(set(steps)) != 1:
            raise RuntimeError(
                f"gradscope: the ranks closed different steps at once ({steps}, by rank): every rank must "
                "run the same number of forward and backward passes under gradscope.watch, with the same "
                "every= (a rank that skips or adds a backward pass puts its step count out of line)")
        out = dict(tables)
        for table in REDUCED:
            out[table] = reduce_rows(table, [rank_tables[table] for _, rank_tables in gathered])
        return out


def reduce_rows(table: str, frames) -> pd.DataFrame:
    """One row per key from every rank's rows of ``table`` (see the module docstring).

    Args:
        table: ``"timesteps"`` or ``"gates"``.
        frames: each rank's rows of that table, in rank order.

    Returns:
        The reduced rows, in the order the keys first appear, with the table's columns.
    """
    present = [f for f in frames if len(f)]
    if not present:
        return frame(table)
    rows = pd.concat(present, ignore_index=True)
    keys = _KEYS[table]
    grouped = rows.groupby(keys, sort=False, dropna=False)
    if table == "timesteps":
        norms = ["grad_norm", "carried_norm", "direct_norm"]
        # a NaN on any rank stays NaN in the mean (pandas' mean would skip it)
        has_nan = rows[norms].isna().groupby([rows[k] for k in keys], sort=False, dropna=False).any()
        out = grouped[norms].mean().mask(has_nan)
        out[["batch", "nonfinite"]] = grouped[["batch", "nonfinite"]].sum()
        out["finite_grad_norm"] = grouped["finite_grad_norm"].mean()  # over the ranks with a finite sequence
    else:
        weight = rows["count"].to_numpy(dtype=np.float64)
        weighted = rows[["mean", "low", "high"]].mul(weight, axis=0).assign(count=weight)
        sums = weighted.groupby([rows[k] for k in keys], sort=False, dropna=False).sum()
        out = sums[["mean", "low", "high"]].div(sums["count"].where(sums["count"] > 0), axis=0)
        out["count"] = grouped["count"].sum()
    return frame(table, out.reset_index())
