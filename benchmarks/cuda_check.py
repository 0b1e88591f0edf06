"""The CUDA path, on a machine with a GPU: run with `python benchmarks/cuda_check.py` (PYTHONPATH=.).

1. Numbers on CUDA equal the CPU numbers (which the test suite checks against an autograd
   reference) for RNN/GRU/LSTM in several configurations, float32 and float64.
2. No host sync per time step: the count of synchronizing calls during a watched step does not
   grow with the sequence length (torch.cuda.set_sync_debug_mode("warn")).
3. Overhead ratios against cuDNN in the same run.
"""

import json
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn

import gradscope

assert torch.cuda.is_available(), "needs a GPU"
dev = torch.device("cuda")
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, flush=True)
results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}


def run(module, x, device, dtype, hx=None):
    module = module.to(device=device, dtype=dtype)
    x = x.to(device=device, dtype=dtype)
    with gradscope.watch(module) as scope:
        out, h = module(x)
        (torch.sin(out).sum() + (h[0] if isinstance(h, tuple) else h).pow(2).sum()).backward()
    return scope.timesteps()


configs = [
    ("RNN", dict(num_layers=2)), ("GRU", dict(bidirectional=True)), ("LSTM", dict(num_layers=2, proj_size=3)),
    ("LSTM", dict(bidirectional=True, batch_first=True)), ("GRU", dict(num_layers=3, batch_first=True)),
]
worst = 0.0
for dtype in (torch.float32, torch.float64):
    for name, kw in configs:
        torch.manual_seed(0)
        module = getattr(nn, name)(5, 8, **kw).eval()
        x = torch.randn(4, 12, 5) if kw.get("batch_first") else torch.randn(12, 4, 5)
        cpu = run(module, x, "cpu", dtype)
        gpu = run(module, x, dev, dtype)
        a = cpu[["grad_norm", "carried_norm", "direct_norm"]].to_numpy()
        b = gpu[["grad_norm", "carried_norm", "direct_norm"]].to_numpy()
        rel = float(np.max(np.abs(a - b) / (np.abs(a) + 1e-6)))
        worst = max(worst, rel)
        print(f"{name} {kw} {dtype}: rows {len(gpu)} max rel diff cpu vs cuda {rel:.2e}", flush=True)
results["max_rel_diff_cpu_vs_cuda"] = worst

# packed sequences on CUDA
from torch.nn.utils.rnn import pack_padded_sequence

torch.manual_seed(0)
lstm = nn.LSTM(5, 8, bidirectional=True)
x = torch.randn(10, 3, 5)
tables = []
for device in ("cpu", dev):
    lstm = lstm.to(device)
    packed = pack_padded_sequence(x.to(device), torch.tensor([10, 4, 7]), enforce_sorted=False)
    with gradscope.watch(lstm) as scope:
        out, (h, c) = lstm(packed)
        (out.data.pow(2).sum() + h.sum()).backward()
    tables.append(scope.timesteps())
rel = float(np.max(np.abs(tables[0]["grad_norm"].to_numpy() - tables[1]["grad_norm"].to_numpy())
                   / tables[0]["grad_norm"].to_numpy()))
print("packed LSTM cpu vs cuda max rel diff", rel, flush=True)
results["packed_rel_diff"] = rel


def count_syncs(steps):
    torch.manual_seed(0)
    model = nn.LSTM(16, 64, num_layers=2).to(dev)
    x = torch.randn(steps, 8, 16, device=dev)
    with gradscope.watch(model):
        out, _ = model(x)  # warm
        out.sum().backward()
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                out, _ = model(x)
                out.sum().backward()
            finally:
                torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    return len(syncs), sorted({str(w.message)[:80] for w in syncs})


s50, m50 = count_syncs(50)
s200, m200 = count_syncs(200)
print(f"synchronizing calls per watched step: T=50 -> {s50}, T=200 -> {s200}", m200, flush=True)
results["syncs_T50"], results["syncs_T200"] = s50, s200

# overhead against cuDNN
from gradscope.bench import measure

rows = []
for cell in ("RNN", "GRU", "LSTM"):
    for hidden, steps in ((256, 100), (512, 200)):
        row = measure(cell, 64, hidden, steps, layers=2, device="cuda", repeat=7, max_repeat=15, budget_s=20)
        rows.append(row)
        print(f"{cell} H={hidden} T={steps} B=64 L=2: cuDNN {row['plain_s'] * 1e3:.1f} ms, exact "
              f"{row['exact']:.1f}x, every=16 {row['every16']:.2f}x, off-schedule {row['off']:.2f}x, "
              f"retain_grad loop {row['loop']:.1f}x, fast {row.get('fast', 'n/a')}", flush=True)
results["bench"] = rows
out = sys.argv[1] if len(sys.argv) > 1 else None
if out:
    with open(out, "w") as fh:
        json.dump(results, fh, indent=2)
