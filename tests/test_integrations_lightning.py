"""GradscopeCallback in a real (tiny, CPU) Trainer.fit: the report, the logged metrics, the model
bitwise as an unwatched fit leaves it (with accumulation, clipping and a validation loop), an
exception during fit, and a resumed fit."""

import csv
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

pytest.importorskip("lightning", reason='needs the lightning extra: pip install "gradscope[lightning]"')
import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from gradscope.integrations.lightning import GradscopeCallback  # noqa: E402

BATCHES, BATCH, T = 8, 4, 6
# lightning's own deprecation notice about torch's pytree, not ours
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")


class TinyRNN(pl.LightningModule):
    def __init__(self, fail_at=None):
        super().__init__()
        # nn.RNN: the exact route runs the same forward float ops as the fused kernel; a watched
        # fit and an unwatched one differ only by the rounding of the recorded steps' gradients
        self.rnn = nn.RNN(3, 8, batch_first=True)
        self.head = nn.Linear(8, 1)
        self.fail_at = fail_at
        self.val_batches = 0

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1]).squeeze(-1)

    def training_step(self, batch, batch_idx):
        if batch_idx == self.fail_at:
            raise RuntimeError("boom in training_step")
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        self.val_batches += 1
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(BATCHES * BATCH, T, 3, generator=generator)
    data = torch.utils.data.TensorDataset(x, x.sum(dim=(1, 2)))
    return torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=False)


def fit(tmp_path, callbacks, max_steps=3, ckpt_path=None, fail_at=None, model=None, loggers=1):
    pl.seed_everything(0, verbose=False)
    model = model if model is not None else TinyRNN(fail_at)
    trainer = pl.Trainer(
        max_steps=max_steps, accelerator="cpu", devices=1,
        logger=[CSVLogger(str(tmp_path / f"logs{i}")) for i in range(loggers)],
        callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, log_every_n_steps=1, accumulate_grad_batches=2, gradient_clip_val=0.5,
        val_check_interval=2, limit_val_batches=2, num_sanity_val_steps=1)
    trainer.fit(model, loader(), loader(), ckpt_path=ckpt_path)
    return model, trainer


def logged_rows(logger):
    with open(f"{logger.log_dir}/metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_fit_writes_report_logs_metrics_and_leaves_the_model_as_an_unwatched_fit(tmp_path):
    plain, _ = fit(tmp_path / "plain", [])
    callback = GradscopeCallback(every=2, out_dir=tmp_path / "gs")
    watched, trainer = fit(tmp_path / "watched", [callback], loggers=2)

    for (name, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items()):
        # recorded steps compute W_hh's gradient as one product over all steps: float rounding
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7, msg=name)
    assert all("forward" not in m.__dict__ for m in watched.modules())

    scope = callback.scope
    # 3 optimizer steps x 2 accumulated micro-batches; the sanity check and the validation
    # batches ran (under inference mode) and are not steps
    assert watched.val_batches > 0
    assert scope.steps_seen == 6
    assert scope.steps() == [0, 2, 4]
    assert (tmp_path / "gs" / "index.html").is_file()
    assert (tmp_path / "gs" / "runs" / "fit-0" / "meta.json").is_file()

    gain = "gradscope/rnn/l0/forward/gain"
    for logger in trainer.loggers:  # every logger the trainer has
        rows = logged_rows(logger)
        logged = [row for row in rows if row.get(gain)]
        assert len(logged) == 3
        assert float(logged[-1][gain]) == pytest.approx(scope.metrics(4)[gain], rel=1e-6)
        assert set(scope.metrics()) <= set(rows[0])


def test_an_exception_during_fit_stops_watching_and_writes_no_report(tmp_path):
    callback = GradscopeCallback(out_dir=tmp_path / "gs")
    model = TinyRNN(fail_at=3)
    with pytest.raises(RuntimeError, match="boom in training_step"):
        fit(tmp_path, [callback], model=model)
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert not callback.scope._active
    assert not (tmp_path / "gs" / "index.html").exists()
    assert callback.scope.steps() == [0, 1, 2]


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch")
def test_a_resumed_fit_writes_the_next_run_folder(tmp_path):
    first = GradscopeCallback(out_dir=tmp_path / "gs")
    model, trainer = fit(tmp_path, [first], max_steps=2)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    second = GradscopeCallback(out_dir=tmp_path / "gs")
    fit(tmp_path, [second], max_steps=3, ckpt_path=tmp_path / "last.ckpt")
    assert second.run_dir == tmp_path / "gs" / "runs" / "fit-1"
    assert second.scope.steps() == [0, 1]  # the one optimizer step left: 2 micro-batches
    assert first.scope.steps() == [0, 1, 2, 3]
    assert (tmp_path / "gs" / "index.html").is_file()
    fresh = GradscopeCallback(out_dir=tmp_path / "gs")  # a new training in the same out_dir
    fit(tmp_path, [fresh], max_steps=1)
    assert fresh.run_dir == tmp_path / "gs" / "runs" / "fit-2"


def test_without_lightning_the_error_names_the_extra():
    code = (
        "import sys; sys.modules['lightning'] = None\n"
        "import gradscope.integrations.lightning as gl\n"
        "try:\n"
        "    gl.GradscopeCallback\n"
        "except ImportError as e:\n"
        "    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(Path(__file__).resolve().parent.parent))  # this checkout's gradscope
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'pip install "gradscope[lightning]"' in done.stdout


def test_the_callback_pickles_as_ddp_spawn_sends_it_to_its_processes(tmp_path):
    copy = pickle.loads(pickle.dumps(GradscopeCallback(every=3, out_dir=tmp_path)))
    assert type(copy) is GradscopeCallback and copy.every == 3 and copy.out_dir == tmp_path
