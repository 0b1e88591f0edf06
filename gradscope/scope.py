"""``gradscope.watch``: the Scope that watches a model while it trains.

The Scope finds the recurrent parts, swaps their forward for the exact route while a recorded
step runs (and back on exit, by exception too), counts steps, and turns each closed step into
table rows (in memory, and streamed to ``run_dir`` when given).
"""

import threading
from typing import Optional
import warnings

import pandas as pd
import torch
import torch.nn as nn

from gradscope.capture import (BufferPool, Capture, ForwardPatch, LinkTable, NotSteppable, Part, StepClock, check_weights,
                               describe, find_parts, forward_nonfinite_table, jacobian_tables, labelled_weights,
                               part_routes, refuse_compiled, route_for, scripted_hint, spectra_job, timestep_and_gate_tables, watched_by,
                               weight_reads)
from gradscope.errors import GradscopeWarning, NoRecurrentModuleError
from gradscope.integrations.distributed import step_reducer
from gradscope.records import SCHEMA_VERSION, Columns, Steps, TableSource, checked_columns, spectrum_of
from gradscope.schedules import check_every
from gradscope.step_rows import StepRows
from gradscope.spectra.background import BackgroundSpectra
from gradscope.spectra.cadence import SpectraCadence, check_spectra_every

MODES = ("exact", "fast")


class AlreadyWatchedError(RuntimeError):
    """The model (or one of its recurrent parts) is already being watched by another Scope."""


SPECTRA = ("auto", "background", "inline")


def watch(model, *, every=1, mode="fast", cells=(), weights=None, jacobians=False, run_dir=None, name=None,
          optimizer=None, spectra="auto", spectra_every="auto", overwrite=False, append=False):
    """Watch ``model``; use as ``with gradscope.watch(model) as scope:`` (or start()/stop()).

    Args:
        every: record every N-th step, or a schedule ``step -> bool`` (``gradscope.schedules``).
        optimizer: a ``torch.optim.Optimizer``: a step is then everything between two
            ``optimizer.step()`` calls (LBFGS closures, gradient accumulation), and only its
            first forward-and-backward is measured.
        spectra: ``"background"``: the weight spectra of a recorded step are computed from a
            copy of its weights on a background thread; ``"inline"``: at step close;
            ``"auto"`` (default): background where the weights live on a GPU, else inline.
        spectra_every: which recorded steps also get weight spectra: ``"auto"`` (default):
            every 50th recorded step from the first, and the last one when the scope stops;
            N: every N-th step number (1: every recorded step); or a schedule ``step -> bool``.
        mode: ``"fast"`` (default): the stock modules' fused kernels run untouched and the
            per-step gradients come from a reverse recursion after backward; ``"exact"``: stepped
            one time step at a time (docs/capture.md).
        overwrite: replace a run already in ``run_dir`` (docs/run-folder.md).
        append: go on with a run already in ``run_dir``. Without either, a ``run_dir`` that
            holds a run is refused.
        The other arguments: see docs/api.md.

    Returns:
        The Scope (not started; ``with`` starts it).
    """
    return Scope(model, every=every, mode=mode, cells=cells, weights=weights, jacobians=jacobians,
                 run_dir=run_dir, name=name, optimizer=optimizer, spectra=spectra, spectra_every=spectra_every,
                 overwrite=overwrite, append=append)


class Scope(TableSource):
    """Records per-timestep BPTT gradient norms (and weight spectra) of a watched model."""

    def __init__(self, model, *, every=1, mode="fast", cells=(), weights=None, jacobians=False,
                 run_dir=None, name=None, optimizer=None, spectra="auto", spectra_every="auto", overwrite=False,
                 append=False):
        if not isinstance(model, nn.Module):
            raise TypeError(f"gradscope.watch(model): model must be a torch.nn.Module, got {type(model).__name__}")
        schedule = check_every(every)
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"gradscope.watch(optimizer=...): expected a torch.optim.Optimizer (the one whose "
                            f"step() ends a training step), got {type(optimizer).__name__}")
        if spectra not in SPECTRA:
            raise ValueError(f"gradscope.watch(spectra={spectra!r}): spectra must be 'auto', 'background' "
                             "(computed off the training thread) or 'inline' (at step close)")
        self._spectra_cadence = SpectraCadence(check_spectra_every(spectra_every))
        if mode not in MODES:
            raise ValueError(f"gradscope.watch(mode={mode!r}): mode must be 'exact' or 'fast'")
        if isinstance(cells, (nn.Module, str)):
            cells = (cells,)
        self.model = model
        self.every = every
        self.mode = mode
        self.name = name if name is not None else type(model).__name__
        self._weights = check_weights(weights)
        self._optimizer = optimizer
        self._optimizer_hook = None
        self._spectra_mode = spectra
        self._spectra_every = spectra_every
        self._jacobians = bool(jacobians)
        refuse_compiled(model)
        self._if_exists = _if_exists(run_dir, overwrite, append)
        # under torch.distributed: every rank reduces each recorded step, rank 0 alone writes
        self._reducer = step_reducer(model)
        self._run_dir = run_dir if self._reducer is None or self._reducer.writes else None
        self._parts = find_parts(model, cells)
        if not self._parts and not self._weights:
            raise NoRecurrentModuleError(
                f"gradscope.watch: {scripted_hint(model)}found no nn.RNN, nn.GRU, nn.LSTM, nn.RNNCell, nn.GRUCell or nn.LSTMCell in "
                f"{type(model).__name__}, and no cells= or weights= were given. For a custom cell module "
                "called once per time step, pass watch(model, cells=[model.my_cell]) (or its qualified name). "
                "For a hand-written loop over raw Parameters, pass weights={'W_hh': W_hh} and mark each new "
                "state with h = scope.track(h, 'label').")
        self._patches = []
        self._links = LinkTable()
        self._buffers = BufferPool()  # the recorded steps' working buffers, while started
        self._custom_layouts = {}  # custom cell name -> (tensors returned, which of them are states)
        self._clock = StepClock(schedule, self._on_close, optimizer_steps=optimizer is not None,
                                on_drop=lambda step: self._links.clear())
        self._background = None  # BackgroundSpectra while started, where the spectra run in the background
        self._lock = threading.RLock()  # the tables, against the background thread
        self._write_lock = threading.Lock()  # the run folder, against the background thread
        self._active = False
        self._rows = StepRows()  # in memory; read back from run_dir once the Scope streams there
        self._first_streamed = None  # the first step number this Scope wrote to run_dir
        self._latest_weights = {}
        self._writer = None
        self._wrote_run = False
        self._warned = set()
        self.meta = self._make_meta()
        if self._reducer is not None:
            self.meta["distributed"] = self._reducer.describe()
        self.meta["routes"] = part_routes(self._parts, mode)  # fast: stock modules only; says so once

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self):
        if self._active:
            raise RuntimeError("this Scope is already started")
        for part in self._parts:
            other = watched_by(part.module)
            if other is not None:
                raise AlreadyWatchedError(
                    f"gradscope.watch: {part.name or '<root>'} ({type(part.module).__name__}) is already watched by "
                    f"the scope {other.name!r}; stop that scope first (leave its with-block or call scope.stop())")
        try:
            if self._run_dir is not None and self._writer is None:
                from gradscope.store import RunWriter

                # a Scope started again continues the run folder it wrote before
                if_exists = "append" if self._wrote_run else self._if_exists
                self._writer = RunWriter(self._run_dir, self.meta, overwrite=if_exists == "overwrite",
                                         append=if_exists == "append")
                if self._writer.last_step is not None:  # appended: step numbers go on after the run's
                    self._clock.count = max(self._clock.count, self._writer.last_step + 1)
                self._wrote_run = True
                self._stream_rows()
            for part in self._parts:
                self._patches.append(ForwardPatch(part.module, lambda original, part=part: self._forward_for(part, original)))
            for read in weight_reads(self._weights):
                read.start()
            if self._optimizer is not None:
                self._optimizer_hook = self._optimizer.register_step_post_hook(
                    lambda optimizer, args, kwargs: self._clock.optimizer_stepped())
            if self._spectra_in_background():
                self._background = BackgroundSpectra(self._deliver_spectra)
        except BaseException:
            self._unpatch()
            raise
        self._active = True
        return self

    def stop(self):
        """Put every watched module back exactly as it was; keep what was recorded (this waits
        for the spectra still being computed in the background)."""
        self._active = False
        self._unpatch()
        self._links.clear()
        self._clock.discard()
        self._buffers.clear()
        background, self._background = self._background, None
        try:
            self._last_step_spectra(background)
            if background is not None:
                background.close()  # every pending step's spectra, into the tables and the run folder
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        if background is not None:
            self._report_errors(background.take_errors())
        return self

    def _last_step_spectra(self, background):
        """``spectra_every="auto"``: the last recorded step's spectra, if its step had none."""
        passed_over = self._spectra_cadence.finish()
        if passed_over is None:
            return
        number, job = passed_over
        if background is not None:
            background.submit(number, job)
            return
        try:
            self._deliver_spectra(number, job())
        except Exception as err:  # the gradients are recorded; say what is missing
            self._warn(("spectra", type(err).__name__), f"gradscope: the last recorded step's ({number}) spectra "
                                                         f"could not be measured ({type(err).__name__}: {err})")

    def _unpatch(self):
        for patch in reversed(self._patches):
            patch.remove()
        self._patches = []
        for read in weight_reads(self._weights):
            read.stop()
        if self._optimizer_hook is not None:
            self._optimizer_hook.remove()
            self._optimizer_hook = None

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        return False

    # ---- hand-written loops -----------------------------------------------------------------
    def track(self, value, label):
        """Mark ``value`` (h, or (h, c)) as the next time step of ``label``; returns ``value``."""
        if not self._capturing():
            return value
        part = Part(label, None, "track")
        if label not in self.meta["modules"] and isinstance(label, str):
            self.meta["modules"][label] = describe(part)
            if self._writer is not None:
                self._writer.update_meta(self.meta)
        return route_for("track", self.mode)(self._capture(self._clock.open()), part, None, (value,), {})

    # ---- the tables (gradscope.records.TableSource: the same methods as a loaded Run) -------
    def table(self, table: str, steps: Steps = None, columns: Columns = None) -> pd.DataFrame:
        """One table of what was recorded so far (``spectra`` waits for the spectra still
        computed in the background). See ``TableSource.table``."""
        if table == "spectra":
            self._settle_spectra()
        columns = checked_columns(table, columns)
        self._report_background_errors()
        with self._lock:
            return self._rows.table(table, steps, columns)

    def steps(self) -> list:
        """The recorded step numbers (those with rows in any table), increasing, as ``Run.steps()``."""
        with self._lock:
            return self._rows.steps()

    def metrics(self, step: Optional[int] = None) -> dict:
        """One recorded step as a flat ``{name: float}`` for any logger (keys and verdict codes:
        docs/integrations.md; a loaded run: ``gradscope.metrics.metrics(run, step)``).

        Args:
            step: a recorded step number; None: the latest.
        Returns:
            ``{"gradscope/<module>/l<layer>/<direction>/<name>": float}``, NaN where a value does
            not exist.
        """
        from gradscope.metrics import metrics

        return metrics(self, step)

    def spectrum(self, module: str, layer: int = 0, direction: str = "forward", gate: Optional[str] = None,
                 step: int = -1) -> dict:
        """See ``TableSource.spectrum``. A block over ``FULL_SPECTRUM_MAX`` rows and columns keeps
        only its summary when recorded; for the latest recorded step its weights are at hand, so
        its full spectrum is computed now."""
        self._settle_spectra()
        try:
            return super().spectrum(module, layer=layer, direction=direction, gate=gate, step=step)
        except KeyError:
            found = self._spectrum_of_latest_weights(module, layer, direction, gate, step)
            if found is None:
                raise
            return found

    def _spectrum_steps(self):
        with self._lock:
            return self._rows.spectrum_steps()

    def _spectrum_values(self, step):
        with self._lock:
            return self._rows.spectrum_values(step)

    def _stream_rows(self):
        """With a run folder, rows written there are read back from it, not kept in memory. Not
        under torch.distributed: each rank's Scope holds its own numbers, rank 0's folder their
        mean."""
        if self._reducer is not None:
            return
        if self._first_streamed is None:  # a Scope started again still starts where it first wrote
            self._first_streamed = self._clock.count
        with self._lock:
            self._rows.follow(self._run_dir, self.meta, self._first_streamed)

    def _spectrum_of_latest_weights(self, module, layer, direction, gate, step):
        from gradscope.spectra import blocks as sp

        entry = self._latest_weights.get((module, layer, direction))
        if entry is None or step not in (-1, entry[0]):
            return None
        number, kind, weights = entry
        blocks = [(module, weights)] if kind is None else sp.recurrent_blocks(kind, weights)
        names = [name for name, _ in blocks]
        gate = gate if gate is not None else ("all" if "all" in names else names[0])
        for name, matrix in blocks:
            if name == gate:
                return spectrum_of(sp.spectrum_value(number, module, layer, direction, gate, matrix))
        return None


    @property
    def steps_seen(self):
        """How many steps have closed, recorded or not."""
        return self._clock.count

    def _spectra_in_background(self):
        """``spectra="auto"``: in the background where the weights live on a GPU (their products
        run there); on a CPU a background thread competes with training for the same cores and
        measured slower per step, with one torch thread for training or two
        (benchmarks/spectra_background.py, docs/spectra.md), so the spectra are computed at
        step close there."""
        if self._spectra_mode != "auto":
            return self._spectra_mode == "background"
        tensors = [p for part in self._parts for p in part.module.parameters()]
        tensors += [w for w in self._weights.values() if isinstance(w, torch.Tensor)]
        return any(t.device.type != "cpu" for t in tensors)

    def _settle_spectra(self):
        """Wait for the spectra still computed in the background: a table read holds every
        recorded step's."""
        if self._background is not None:
            self._background.wait()

    def _report_background_errors(self):
        if self._background is not None:
            self._report_errors(self._background.take_errors())

    @staticmethod
    def _report_errors(errors):
        if errors:
            steps = ", ".join(str(number) for number, _ in errors)
            number, err = errors[-1]
            warnings.warn(f"gradscope: the spectra of step(s) {steps} could not be measured or written in the "
                          f"background (step {number}: {type(err).__name__}: {err}); the gradients of those steps "
                          "are recorded", GradscopeWarning, stacklevel=3)

    # ---- internals ----------------------------------------------------------------------------
    def _capturing(self):
        return self._active and torch.is_grad_enabled() and not torch.is_inference_mode_enabled()

    def _forward_for(self, part, original):
        scope = self
        route = route_for(part.kind, self.mode)

        def forward(*args, **kwargs):
            if not scope._capturing() or not _needs_grad(part.module, args, kwargs):
                return original(*args, **kwargs)
            step = scope._clock.open()
            if not step.recorded:
                out = original(*args, **kwargs)
                scope._watch_outputs(step, out)
                return out
            ctx = scope._capture(step)
            try:
                return route(ctx, part, original, args, kwargs)
            except NotSteppable:
                ctx.abandon()
                return original(*args, **kwargs)
            except Exception as err:
                ctx.abandon()
                if _is_control_flow(err):
                    raise
                out = original(*args, **kwargs)  # bad input raises the module's own error here
                scope._warn(("fallback", part.name), (
                    f"gradscope: could not step {part.name or '<root>'} ({type(part.module).__name__}) exactly "
                    f"({type(err).__name__}: {err}); this call ran the module's own code and is not recorded."))
                scope._watch_outputs(step, out)
                return out

        setattr(forward, ForwardPatch.MARK, scope)
        return forward

    def _capture(self, step):
        """The capture context of one forward call (or track call) of ``step``."""
        return Capture(step, links=self._links, jacobians=self._jacobians, custom_layouts=self._custom_layouts,
                       warn=self._warn, hook=self._hook, active=lambda: self._active, reached=self._clock.reached,
                       buffers=self._buffers)

    def _hook(self, step, tensor, fn):
        scope = self

        def on_grad(grad):
            if step.closed or not scope._active:
                return
            try:
                # backward(create_graph=True) hands gradients that carry a graph; records keep
                # numbers only, and measuring must not grow the user's second-order graph
                fn(grad.detach())
            except Exception as err:  # never break the user's backward pass
                scope._warn(("hook", type(err).__name__), f"gradscope: a measurement failed and was dropped "
                                                           f"({type(err).__name__}: {err})")
            scope._clock.reached(step)

        tensor.register_hook(on_grad)

    def _watch_outputs(self, step, out):
        """On a step that is not recorded, learn only when backward has gone through it."""
        for tensor in _tensors_in(out):
            if tensor.requires_grad:
                self._hook(step, tensor, lambda g: None)

    def _on_close(self, step):
        self._links.clear()
        if not step.recorded:
            self._buffers.clear()  # nothing held across steps that are not recorded
            self._forget_weight_reads()
            return
        self._buffers.release_unused()
        try:
            tables = dict(zip(("timesteps", "gates"), timestep_and_gate_tables(step)))
        except Exception as err:
            self._warn(("close", type(err).__name__), f"gradscope: step {step.number}'s gradients could not be "
                                                       f"recorded ({type(err).__name__}: {err})")
            if self._reducer is not None:
                self._reducer(step.number, {})  # join the step's collective all the same: no rank waits
            return
        if any(record.restricted for record in step.received):  # known once the records are finished
            self._warn(("restricted",), (
                "gradscope: a backward pass that computes only some gradients (torch.autograd.grad, or "
                ".backward(inputs=...)) went through a recorded step without reaching every part gradscope "
                "measures (a layer's every time step, or the zero probes that join a cell loop's calls), so "
                "the numbers of those parts in such steps are not recorded. Record steps that call "
                "loss.backward()."))
        try:
            tables["forward_nonfinite"] = forward_nonfinite_table(step)
        except Exception as err:  # the gradients are still worth keeping
            self._warn(("forward", type(err).__name__), f"gradscope: step {step.number}'s forward NaN/Inf "
                                                         f"check failed ({type(err).__name__}: {err})")
        values, job = self._measure_weights(step, tables)
        self._keep_step(step.number, tables, values, job)

    def _measure_weights(self, step, tables):
        """The step's spectra (computed now, or a job for the background thread) and opt-in
        Jacobians, added to ``tables``; returns ``(spectrum values, background job or None)``."""
        values, job = [], None
        cadence = self._spectra_cadence
        try:
            due = cadence.due(step.number)
            if due or cadence.keeps_last:
                # the copy of the weights is taken now, before the optimizer changes them
                labelled = labelled_weights(self._weights, step.number, self._warn)
                job = spectra_job(step, labelled, parallel=self._background is None)
                if not due:  # computed at stop() if this is the last recorded step
                    cadence.pass_over(step.number, job)
                    job = None
            else:
                self._forget_weight_reads()
            if job is not None and self._background is None:
                job, compute = None, job
                tables["spectra"], values, latest = compute()
                self._latest_weights = latest or self._latest_weights
            if self._jacobians:  # opt-in, and computed now: it needs the step's states
                tables["jacobians"], tables["lyapunov"] = jacobian_tables(step)
        except Exception as err:  # the gradients are still worth keeping
            self._warn(("spectra", type(err).__name__), f"gradscope: step {step.number}'s spectra/Jacobians could "
                                                         f"not be measured ({type(err).__name__}: {err})")
        return values, job

    def _keep_step(self, number, tables, values, job):
        """A measured step's rows into the tables and the run folder (the mean over ranks under
        torch.distributed) and, for its spectra, the background thread."""
        self._store_step(number, tables, values)
        if job is not None:
            self._background.submit(number, job)

    def _store_step(self, number, tables, values):
        """A closed step's rows: to the run folder, and in memory unless the Scope reads them
        back from there (a write that failed keeps them in memory)."""
        streams = self._rows.streams
        if not streams:
            with self._lock:
                self._rows.keep(tables, values)
        if self._reducer is not None:  # this rank keeps its own rows; the run folder gets the mean
            tables = self._reducer(number, tables)
        if self._writer is None:
            if streams:  # not expected (the writer lives from start to stop); nothing is lost
                with self._lock:
                    self._rows.keep(tables, values)
            return
        try:
            with self._write_lock:
                self._writer.write_step(number, tables, values)
        except BaseException as err:
            if streams:
                with self._lock:
                    self._rows.keep(tables, values)
            if not isinstance(err, Exception):
                raise  # Ctrl-C part-way through: the user's to handle; the rows are kept all the same
            self._warn(("write", type(err).__name__), f"gradscope: step {number} could not be written to "
                                                       f"{self._run_dir} ({type(err).__name__}: {err}); its rows "
                                                       "are kept in memory")
            return
        if streams:
            with self._lock:
                self._rows.written()

    def _forget_weight_reads(self):
        """A step whose weights are not measured: its reads are not the next step's."""
        for read in weight_reads(self._weights):
            read.forget()

    def _deliver_spectra(self, number, result):
        """On the background thread, in step order: a step's spectra join the tables, then the
        run folder (as rows added to the step written at its close)."""
        spectra, values, latest = result
        with self._lock:
            if latest:
                self._latest_weights = latest
            streams = self._rows.streams
            if not streams:
                self._rows.keep({"spectra": spectra}, values)
        writer = self._writer
        if writer is None:
            if streams:
                with self._lock:
                    self._rows.keep({"spectra": spectra}, values)
            return
        try:
            with self._write_lock:
                writer.add_to_step(number, {"spectra": spectra}, values)
        except BaseException:
            if streams:  # kept in memory; the background worker reports the error
                with self._lock:
                    self._rows.keep({"spectra": spectra}, values)
            raise
        if streams:
            with self._lock:
                self._rows.written()

    def _warn(self, key, message):
        if key in self._warned:
            return
        self._warned.add(key)
        warnings.warn(message, GradscopeWarning, stacklevel=2)

    def _make_meta(self):
        modules = {part.name: describe(part) for part in self._parts}
        return {"schema": SCHEMA_VERSION, "name": self.name, "mode": self.mode, "every": _json_schedule(self.every),
                "spectra_every": _json_schedule(self._spectra_every), "jacobians": self._jacobians,
                "modules": modules, "weights": sorted(self._weights)}

    def __repr__(self):
        state = "watching" if self._active else "stopped"
        return f"<gradscope.Scope {self.name!r} {state}, {len(self._parts)} parts, {self.steps_seen} steps seen>"


def _is_control_flow(err):
    """An exception torch raises on purpose through the forward, not a failure to step: the
    non-reentrant torch.utils.checkpoint stops its recomputation inside backward this way."""
    return type(err).__name__ == "_StopRecomputationError" and type(err).__module__ == "torch.utils.checkpoint"


def _if_exists(run_dir, overwrite, append):
    """What to do with a run already in ``run_dir``: "error", "overwrite" or "append"."""
    if overwrite and append:
        raise ValueError("gradscope.watch: pass overwrite=True (replace the run in run_dir) or "
                         "append=True (go on with it), not both")
    if (overwrite or append) and run_dir is None:
        raise ValueError("gradscope.watch: overwrite=True and append=True are about a run folder; "
                         "pass run_dir=... too (without it nothing is written to disk)")
    return "overwrite" if overwrite else "append" if append else "error"


def _json_schedule(every):
    """A whole number as itself, a schedule as its description (meta.json is JSON)."""
    if isinstance(every, str):  # "auto"
        return every
    return repr(every) if callable(every) else int(every)  # watch() checked: a schedule or a whole number


def _tensors_in(value):
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, PackedSequence):
        yield value.data
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors_in(item)


def _needs_grad(module, args, kwargs):
    for value in list(args) + list(kwargs.values()):
        for tensor in _tensors_in(value):
            if tensor.requires_grad:
                return True
    return any(p.requires_grad for p in module.parameters())
