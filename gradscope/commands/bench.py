"""``gradscope bench``: print the measured overhead ratios of watching."""

import json


def add_arguments(parser):
    parser.add_argument("--cells", default="RNN,GRU,LSTM", help="comma-separated: RNN, GRU, LSTM")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")


def run(args):
    from gradscope.bench import CELLS, run as run_bench

    cells = [c.strip().upper() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        print(f"gradscope bench: unknown cell {unknown[0]!r}; choose from {', '.join(CELLS)}")
        return 2
    rows = run_bench(cells, hidden=args.hidden, steps=args.seq_len, batch=args.batch, layers=args.layers,
                     repeats=args.repeats, device=args.device)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0
