"""``GradscopeCallback``: gradscope inside ``lightning.pytorch.Trainer.fit``.

The class is built on first use (``from gradscope.integrations.lightning import
GradscopeCallback``), so this module imports without the ``lightning`` package; using the
callback without it raises an ImportError that names the extra to install.

What it does (docs/integrations.md):
  - fit start: ``gradscope.watch(pl_module, every=..., mode=..., run_dir=out_dir/runs/fit-<k>)``;
    validation and sanity checks run under no_grad/inference mode and are not recorded;
  - after each training batch whose backward closed a recorded step: ``metrics()`` to each of
    ``trainer.loggers`` at ``trainer.global_step``;
  - fit end: stop watching, write the report (``gradscope.report``) to ``out_dir`` (global
    rank 0 only); an exception during fit stops watching (the model is as it was) and writes
    no report;
  - checkpoint resume: the callback's state counts the fits, so a resumed fit writes the next
    run folder (``fit-1``, ...) instead of clashing with the first one; a fresh training in
    an ``out_dir`` that already holds runs takes the first free ``fit-<k>`` too.
"""

from __future__ import annotations

from pathlib import Path

from gradscope.integrations._extras import require

__all__ = ["GradscopeCallback"]


def __getattr__(name):
    if name == "GradscopeCallback":
        cls = _build_callback_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build_callback_class():
    pl = require("lightning.pytorch", "lightning", "gradscope.integrations.lightning.GradscopeCallback")

    class GradscopeCallback(pl.Callback):
        """Watch the LightningModule during ``fit``; log its metrics; write a report at the end.

        Args:
            every: record every N-th training step (a forward and backward; with
                ``accumulate_grad_batches=k`` each micro-batch is a step), or whatever
                ``gradscope.watch(every=...)`` takes.
            out_dir: folder for the run folders (``runs/fit-<k>``) and the report (``index.html``).
            mode: ``gradscope.watch``'s mode.
            log: send ``metrics()`` of each recorded step to the trainer's loggers.
            report: write the report when fit ends.
            **watch_kwargs: more ``gradscope.watch`` arguments (``cells``, ``weights``, ``name``).
        """

        def __init__(self, every=1, out_dir="gradscope", mode="exact", *, log: bool = True,
                     report: bool = True, **watch_kwargs):
            super().__init__()
            self.every = every
            self.out_dir = Path(out_dir)
            self.mode = mode
            self.log = log
            self.report = report
            self.watch_kwargs = watch_kwargs
            self.scope = None
            self.run_dir = None
            self._fits = 0  # fits begun before this one (restored from a checkpoint)
            self._seen = 0
            self._logged = None
            self._watching = False

        # -- lifecycle ----------------------------------------------------------------------
        def on_fit_start(self, trainer, pl_module):
            import gradscope

            fit = self._fits
            while (self.out_dir / "runs" / f"fit-{fit}" / "meta.json").exists():
                fit += 1  # out_dir reused by another training: never mix two runs in one folder
            self.run_dir = self.out_dir / "runs" / f"fit-{fit}"
            kwargs = dict(self.watch_kwargs)
            kwargs.setdefault("name", type(pl_module).__name__)
            self.scope = gradscope.watch(pl_module, every=self.every, mode=self.mode, run_dir=self.run_dir,
                                         **kwargs)
            self._seen, self._logged = 0, None
            self.scope.start()
            self._watching = True

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            scope = self.scope
            if scope is None or not self.log or scope.steps_seen == self._seen:
                return
            self._seen = scope.steps_seen
            recorded = scope.steps()
            if not recorded or recorded[-1] == self._logged:
                return
            self._logged = recorded[-1]
            if trainer.loggers:
                numbers = scope.metrics(self._logged)
                for logger in trainer.loggers:  # every logger the trainer has (logger=[...])
                    logger.log_metrics(numbers, step=trainer.global_step)

        def on_fit_end(self, trainer, pl_module):
            self._fits += 1
            if self.scope is None:
                return
            self.scope.stop()
            self._watching = False
            if self.report and trainer.is_global_zero:
                import gradscope

                title = f"{self.scope.name}: gradients during {self.run_dir.name}"
                gradscope.report(self.run_dir, self.out_dir, title=title)

        def on_exception(self, trainer, pl_module, exception):
            if self.scope is not None:
                self.scope.stop()
            self._watching = False

        # -- checkpoints --------------------------------------------------------------------
        def state_dict(self):
            # saved during fit: the run that resumes from it is the next fit
            return {"fits": self._fits + (1 if self._watching else 0)}

        def load_state_dict(self, state_dict):
            self._fits = int(state_dict.get("fits", 0))

    # the class pickles by name (ddp_spawn sends the callbacks to its processes): the name
    # resolves through this module's __getattr__ to this very class
    GradscopeCallback.__module__ = __name__
    GradscopeCallback.__qualname__ = "GradscopeCallback"
    return GradscopeCallback
