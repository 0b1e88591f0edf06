"""A run of 200 steps x T=200 x 2 layers (the CI-sized cousin of benchmarks/store_scale.py)."""

import pandas as pd
import pandas.testing as pdt

from gradscope.store import RunWriter, load
from gradscope.store.synthetic import synthetic_meta, synthetic_step

STEPS, T, LAYERS = 200, 200, 2


def test_two_hundred_steps_round_trip_and_read_in_bounded_pieces(tmp_path):
    templates = [synthetic_step(i, cell="GRU", T=T, layers=LAYERS) for i in range(4)]

    def step_tables(step):
        tables, values = templates[step % 4]
        return ({name: df.assign(step=step) for name, df in tables.items()},
                [dict(v, step=step) for v in values])

    with RunWriter(tmp_path / "run", synthetic_meta("scale", cell="GRU", layers=LAYERS)) as writer:
        for step in range(STEPS):
            writer.write_step(step, *step_tables(step))

    run = load(tmp_path / "run")
    assert run.steps() == list(range(STEPS))
    assert run.row_count("timesteps") == STEPS * T * LAYERS

    full = run.timesteps()
    want = pd.concat([step_tables(s)[0]["timesteps"] for s in range(STEPS)], ignore_index=True)
    pdt.assert_frame_equal(full, want)

    sample = run.sample_steps(20)
    assert len(sample) == 20 and sample[-1] == STEPS - 1
    pdt.assert_frame_equal(run.timesteps(steps=sample),
                           want[want["step"].isin(sample)].reset_index(drop=True))

    # chunks hold whole steps and about chunk_bytes of file each: memory stays bounded
    per_step = T * LAYERS
    sizes = [len(c) for c in run.iter_table("timesteps", columns=["step", "grad_norm"],
                                             chunk_bytes=1 << 20)]
    assert sum(sizes) == len(want)
    assert all(size % per_step == 0 for size in sizes)
    assert max(sizes) < len(want) / 4
