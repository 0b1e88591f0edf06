"""The demo's built-in tasks, models, training loop and progress bar (no gradscope.watch here)."""

import io
import math

import pytest
import torch

from gradscope.tasks import (KINDS, AddingTask, CharLMTask, CopyTask, build_model, evaluate, make_task,
                             seeded_generator, stdlib_text, train)
from gradscope.tasks.progress import ProgressBar


def test_adding_batch_marks_one_value_in_each_half_and_sums_them():
    task = AddingTask(seq_len=30)
    x, y = task.batch(64, seeded_generator(1))
    assert x.shape == (64, 30, 2) and y.shape == (64, 1)
    markers = x[..., 1]
    assert torch.equal(markers.sum(1), torch.full((64,), 2.0))
    assert torch.equal(markers[:, :15].sum(1), torch.ones(64))
    assert torch.allclose((x[..., 0] * markers).sum(1, keepdim=True), y)
    assert 0 <= float(x[..., 0].min()) and float(x[..., 0].max()) < 1


def test_adding_baseline_is_the_mse_of_guessing_the_mean():
    task = AddingTask(seq_len=10)
    _, y = task.batch(200_000, seeded_generator(0))
    guessed = float(((y - 1.0) ** 2).mean())
    assert task.baseline == pytest.approx(1 / 6)
    assert guessed == pytest.approx(task.baseline, abs=0.003)
    # the loss the task computes from a constant output of 1.0 is the same number
    outputs = torch.ones(len(y), 10, 1)
    assert float(task.loss(outputs, y)) == pytest.approx(guessed, rel=1e-5)


@pytest.mark.parametrize("name", ["adding", "copy", "charlm"])
def test_batches_depend_on_the_seed_only(name):
    task = make_task(name, 24)
    torch.manual_seed(123)  # global RNG state must not matter
    first = task.batch(8, seeded_generator(5))
    torch.manual_seed(456)
    again = task.batch(8, seeded_generator(5))
    other = task.batch(8, seeded_generator(6))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_copy_targets_are_the_first_symbols_and_uniform_guessing_costs_ln_n():
    task = CopyTask(seq_len=25, copy_len=4, n_symbols=6)
    x, y = task.batch(16, seeded_generator(0))
    tokens = x.argmax(-1)
    assert x.shape == (16, 25, 8) and y.shape == (16, 4)
    assert torch.equal(tokens[:, :4], y)
    assert torch.all(tokens[:, 25 - 4 - 1] == task.delimiter)
    assert torch.all(tokens[:, 4:20] == task.blank) and torch.all(tokens[:, 21:] == task.blank)
    uniform = torch.zeros(16, 25, task.output_size)
    assert float(task.loss(uniform, y)) == pytest.approx(math.log(6)) == pytest.approx(task.baseline)


def test_copy_rejects_a_sequence_too_short_for_the_symbols():
    with pytest.raises(ValueError, match="seq-len"):
        CopyTask(seq_len=8, copy_len=5)


def test_charlm_reads_python_help_text_and_predicts_the_next_character():
    text = stdlib_text()
    assert len(text) > 10_000 and "the" in text and text.isascii()
    task = CharLMTask(seq_len=20)
    x, y = task.batch(4, seeded_generator(0))
    assert x.shape == (4, 20, len(task.vocab)) and y.shape == (4, 20)
    assert torch.equal(x.argmax(-1)[:, 1:], y[:, :-1])
    # the baseline is what predicting the character frequencies costs on the text itself
    counts = torch.bincount(torch.cat(list(task.codes.values())), minlength=len(task.vocab)).float()
    assert 2.0 < task.baseline < math.log(len(task.vocab))
    frequencies = counts / counts.sum()
    assert -(frequencies[frequencies > 0] * frequencies[frequencies > 0].log()).sum() == pytest.approx(task.baseline, rel=0.01)


def test_charlm_eval_split_is_held_out_text():
    task = CharLMTask(seq_len=30, text="abcdefghij" * 50 + "0123456789" * 10, eval_share=0.2)
    x, _ = task.batch(16, seeded_generator(0), split="eval")
    seen = {task.vocab[i] for i in x.argmax(-1).flatten().tolist()}
    assert seen & set("0123456789")


@pytest.mark.parametrize("kind", KINDS)
def test_models_share_the_hidden_size_and_give_per_step_outputs(kind):
    task = AddingTask(seq_len=7)
    model = build_model(kind, task, hidden_size=12, seed=0)
    x, _ = task.batch(3, seeded_generator(0))
    assert model(x).shape == (3, 7, 1)
    assert model.rnn.hidden_size == 12 and type(model.rnn).__name__ == kind
    assert torch.equal(build_model(kind, task, 12, seed=0).head.weight, model.head.weight)


def test_lstm_starts_with_open_forget_gates():
    model = build_model("LSTM", AddingTask(10), hidden_size=5, seed=0)
    total = model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0
    assert torch.equal(total[5:10], torch.ones(5))


def test_unknown_names_say_what_exists():
    with pytest.raises(ValueError, match="RNN, GRU, LSTM"):
        build_model("Transformer", AddingTask(10), 4)
    with pytest.raises(ValueError, match="adding, copy, charlm"):
        make_task("parity", 10)


def test_training_beats_the_adding_baseline_on_short_sequences():
    task = AddingTask(seq_len=10)
    model = build_model("GRU", task, hidden_size=16, seed=0)
    before = evaluate(model, task)
    losses = train(model, task, 150, batch_size=32, lr=1e-2, seed=0)
    assert len(losses) == 150
    assert evaluate(model, task) < 0.5 * task.baseline < before


def test_progress_bar_in_a_log_prints_tenths_and_ends_full():
    stream = io.StringIO()
    bar = ProgressBar("LSTM", 200, stream=stream)
    for step in range(200):
        bar.update(step + 1, loss=0.5)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 11
    assert lines[-1].startswith("LSTM") and "200/200" in lines[-1] and "#" * 30 in lines[-1]
