"""Two gloo ranks on loopback for tests/test_integrations_ddp.py (run as a script; it spawns them).

    python tests/distributed_worker.py SCENARIO PORT OUT_DIR

Scenarios:
  ddp:   a DDP model, 2 recorded steps; rank 1's sequences are shorter at step 1. Each rank
         saves its own rows, its shard and the weights before each step (for a single-process
         replay) to OUT_DIR/rank<r>.pt; rank r's run_dir is OUT_DIR/run-rank<r>.
  raise: no DDP (gradscope's collective is the only one); rank 1 raises in forward at step 1
         and stays alive (as under a framework that catches it) until rank 0 is done; rank 0
         must not wait in that step's collective beyond the process group's timeout.
Each rank writes what happened to OUT_DIR/result<r>.json.
"""

import datetime
import json
import os
import sys
import time
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

import gradscope

B, F, H, TIMEOUT_S = 3, 4, 5, 5
LENGTHS = {0: (6, 6), 1: (6, 4)}  # rank -> sequence length at step 0, step 1


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(F, H, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * H, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0]).square().mean()


def shard(rank, step):
    generator = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(B, LENGTHS[rank][step], F, generator=generator)


def run(rank, scenario, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    result = {"rank": rank}
    try:
        torch.manual_seed(0)
        model = Net()
        if scenario == "ddp":
            run_ddp(rank, model, out)
        else:
            result.update(run_raise(rank, model, out))
    except Exception as err:  # noqa: BLE001 - the test reads what happened
        result["error"] = f"{type(err).__name__}: {err}"
        result["traceback"] = traceback.format_exc()[-3000:]
    result["forward_left"] = any("forward" in m.__dict__ for m in model.modules())
    with open(os.path.join(out, f"result{rank}.json"), "w") as f:
        json.dump(result, f)
    if scenario == "raise" and rank == 1:  # linger: rank 0 cannot learn from a closed socket
        deadline = time.monotonic() + 4 * TIMEOUT_S
        while not os.path.exists(os.path.join(out, "result0.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
    if "error" not in result:
        dist.destroy_process_group()


def run_ddp(rank, model, out):
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.5)
    saved = {"inputs": [], "weights": []}
    with gradscope.watch(model, run_dir=os.path.join(out, f"run-rank{rank}")) as scope:
        for step in range(2):
            x = shard(rank, step)
            saved["inputs"].append(x)
            saved["weights"].append({k: v.clone() for k, v in model.state_dict().items()})
            ddp(x).backward()
            optimizer.step()
            optimizer.zero_grad()
    saved["timesteps"] = scope.timesteps()
    saved["gates"] = scope.gates()
    torch.save(saved, os.path.join(out, f"rank{rank}.pt"))


def run_raise(rank, model, out):
    with gradscope.watch(model, run_dir=os.path.join(out, f"run-rank{rank}")):
        model(shard(rank, 0)).backward()
        if rank == 1:
            raise RuntimeError("rank 1 fails in forward")
        started = time.monotonic()
        try:
            model(shard(rank, 1)).backward()
        except Exception as err:  # noqa: BLE001 - the test reads what happened
            return {"error": f"{type(err).__name__}: {err}", "waited_s": time.monotonic() - started}
    return {}


if __name__ == "__main__":
    scenario, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    mp.spawn(run, args=(scenario, port, out), nprocs=2, join=True)
