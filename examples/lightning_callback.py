"""A LightningModule (a 1-layer LSTM on the adding problem) trained with ``Trainer.fit`` and
gradscope's ``GradscopeCallback``: no change to the module or the training step.

The callback watches the module while ``fit`` runs (every 5th training step recorded),
sends ``scope.metrics()`` of each recorded step to the trainer's logger (here a CSVLogger:
``OUT/logs/.../metrics.csv`` gets columns like ``gradscope/rnn/l0/forward/gain``), and writes
the report ``OUT/index.html`` with the run folder ``OUT/runs/fit-0`` when fit ends. The
validation loop runs under inference mode and is not recorded.

Needs the lightning extra: ``pip install "gradscope[lightning]"``.

    python examples/lightning_callback.py                 # ~30 seconds on 2 CPU cores
    python examples/lightning_callback.py --small         # seconds
    python examples/lightning_callback.py --out runs/pl   # where the report goes
"""

import argparse
import shutil
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

import gradscope
from gradscope.integrations.lightning import GradscopeCallback
from gradscope.tasks import AddingTask, seeded_generator


class AddingLSTM(pl.LightningModule):
    def __init__(self, hidden=32, lr=1e-2):
        super().__init__()
        self.rnn = nn.LSTM(2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)
        self.lr = lr

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_mse", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_mse", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def adding_data(task, batches, batch_size, seed):
    generator = seeded_generator(seed)
    pairs = [task.batch(batch_size, generator) for _ in range(batches)]
    x, y = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def main(small=False, out="runs/lightning"):
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)  # a fresh example run each time
    pl.seed_everything(0, verbose=False)
    seq_len, hidden, batches, epochs = (12, 8, 6, 2) if small else (50, 32, 60, 5)
    task = AddingTask(seq_len=seq_len)
    model = AddingLSTM(hidden)
    callback = GradscopeCallback(every=5, out_dir=out)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=CSVLogger(str(out / "logs")),
        callbacks=[callback], gradient_clip_val=1.0, log_every_n_steps=5,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(model, adding_data(task, batches, 32, seed=0), adding_data(task, 2, 32, seed=1))

    diagnosis = gradscope.analyze(callback.run_dir)
    print(diagnosis.summary()[["module", "layer", "gain", "horizon", "verdict"]].to_string(index=False))
    print(f"report: {out / 'index.html'}  logged metrics: {trainer.logger.log_dir}/metrics.csv")
    return callback, diagnosis


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a tiny run that takes seconds")
    parser.add_argument("--out", default="runs/lightning", help="folder for the report, run folder and logs")
    args = parser.parse_args()
    main(small=args.small, out=args.out)
