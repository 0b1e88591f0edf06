"""DistributedDataParallel on CPU (the gloo backend) with gradscope on every rank.

Each rank trains a replica of a 2-layer GRU on its own shard of the adding problem and watches
it with the same ``gradscope.watch(...)`` call. When a recorded step closes, the ranks' per-time
step gradient norms are gathered in one collective call; rank 0 alone writes the run folder
(each row: the mean over the ranks, ``nonfinite`` and ``batch`` summed) and the report. Each
rank's ``scope`` keeps its own numbers.

    torchrun --nproc_per_node 2 examples/ddp_gloo.py                 # ~30 seconds on 2 CPU cores
    torchrun --nproc_per_node 2 examples/ddp_gloo.py --small         # seconds
    torchrun --nproc_per_node 2 examples/ddp_gloo.py --out runs/ddp  # where rank 0 writes

Several machines: ``torchrun --nnodes 2 --node_rank N --master_addr HOST --nproc_per_node 2
examples/ddp_gloo.py`` on each (the script does not change). On GPUs, use the nccl backend and
``torch.cuda.set_device(local_rank)`` before wrapping the model, as any DDP script does.
"""

import argparse
import datetime
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import gradscope
from gradscope.tasks import AddingTask, seeded_generator


class AddingGRU(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.rnn = nn.GRU(2, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def main(small=False, out="runs/ddp"):
    # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; a bounded timeout makes a
    # rank whose peer died fail instead of waiting for the default 30 minutes
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(out)
    if rank == 0 and out.exists():
        shutil.rmtree(out)  # a fresh example run each time
    dist.barrier()  # no rank starts before rank 0 has cleared the folder

    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts them)
    seq_len, hidden, steps, every = (12, 8, 6, 2) if small else (40, 32, 300, 25)
    task = AddingTask(seq_len=seq_len)
    model = AddingGRU(hidden)
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=3e-3)
    generator = seeded_generator(1000 + rank)  # this rank's shard of the data

    # watch the module inside DDP (watching ``ddp`` works too; names then start with "module.")
    with gradscope.watch(ddp.module, every=every, run_dir=out / "run", name=f"GRU, DDP x{world}") as scope:
        for step in range(steps):
            x, y = task.batch(32, generator)
            loss = nn.functional.mse_loss(ddp(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if rank == 0 and (step % 50 == 0 or step == steps - 1):
                print(f"step {step:4d}  MSE {loss.item():.4f}  (baseline {task.baseline:.3f})")

    own = scope.timesteps()
    print(f"rank {rank}: {len(own)} rows of its own, mean grad_norm {own['grad_norm'].mean():.4g}")
    dist.barrier()
    if rank == 0:  # the run folder holds the mean over the ranks
        diagnosis = gradscope.analyze(out / "run")
        print(diagnosis.summary()[["module", "layer", "gain", "horizon", "verdict"]].to_string(index=False))
        print(f"report: {gradscope.report(out / 'run', out)}")
    dist.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a tiny run that takes seconds")
    parser.add_argument("--out", default="runs/ddp", help="folder for rank 0's run folder and report")
    args = parser.parse_args()
    main(small=args.small, out=args.out)
