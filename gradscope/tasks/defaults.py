"""The demo's settings, importable without torch (``gradscope --help`` reads them)."""

TASK_NAMES = ("adding", "copy", "charlm")

# Tuned so that at T = 100 the LSTM and GRU beat the adding-problem baseline within the budget
# of the issue (< 3 minutes for all three on 2 CPU cores); see docs/demo.md for the measurements.
DEFAULTS = {"task": "adding", "steps": 1500, "seq_len": 100, "hidden": 32, "seed": 0, "every": 50,
            "batch_size": 64, "lr": 1e-2, "out": "reports/demo"}
