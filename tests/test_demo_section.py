"""The demo's task section of the report: numbers, the story per model, and where it goes."""

import math

from gradscope.tasks.report_section import insert_section, reading, story, task_section


def results(models):
    return {
        "task": {"task": "adding", "seq_len": 100, "loss_name": "MSE", "baseline": 1 / 6,
                 "baseline_note": "predict the mean sum 1.0 (MSE = 1/6)"},
        "training": {"steps": 300, "hidden": 32, "seed": 0, "lr": 0.01, "batch_size": 64,
                     "optimizer": "Adam", "clip_grad_norm": 1.0},
        "every": 100, "models": models, "figure": "task-loss.png",
    }


def model(name, loss, horizons, train_losses):
    history = [{"step": 100 * i, "gain": 0.9, "horizon": h, "train_loss": t}
               for i, (h, t) in enumerate(zip(horizons, train_losses))]
    return {"model": name, "parameters": 10, "eval_loss": loss, "gain": 0.9, "horizon": horizons[0],
            "gain_end": 0.9, "horizon_end": horizons[-1], "verdict": "healthy", "history": history}


RNN = model("RNN", 0.2, [12.0, 9.0, 5.0], [0.17, 0.17, 0.18])
LSTM = model("LSTM", 0.001, [24.0, 25.0, 1200.0], [0.17, 0.16, 0.002])
GRU = model("GRU", 0.0001, [math.inf, math.inf, math.inf], [0.01, 0.001, 0.001])


def test_story_says_when_each_model_left_the_baseline_and_what_its_horizon_did():
    lines = story(results([RNN, LSTM, GRU]))
    assert lines[0] == ("RNN: its training loss never got 10% below the baseline; its horizon stayed "
                        "between 5 and 12 steps.")
    assert lines[1] == ("LSTM: its training loss first got 10% below the baseline in steps 200-299 (mean over "
                        "the window); its horizon was 25 steps at step 100 and 1200 at step 200.")
    assert lines[2].startswith("GRU: its training loss was 10% below the baseline from the first") and "∞" in lines[2]


def test_story_names_an_earlier_longer_horizon():
    spike = model("RNN", 1.8, [12.0, 295.0, 9.0, 8.0], [0.17, 0.17, 0.16, 0.14])
    line = story(results([spike]))[0]
    assert line.endswith("horizon was 9 steps at step 200 and 8 at step 300 (longest until then: 295 steps at step 100).")


def test_reading_compares_the_shortest_and_longest_horizon_at_the_end():
    text = reading(results([RNN, LSTM]))
    assert text == ("At the end of training the RNN's gradient falls to 1/1000 of its size within 5 steps "
                    "back; the LSTM's reaches 1200 steps back, beyond the whole sequence of 100.")


def test_section_holds_loss_against_baseline_per_model():
    html = task_section(results([RNN, LSTM]))
    assert "0.1667" in html and "0.2000" in html and "0.0010" in html
    assert html.count("<tr>") == 3  # header and two models
    assert ">no<" in html and ">yes<" in html  # RNN does not beat the baseline, LSTM does
    assert 'src="task-loss.png"' in html


def test_names_are_escaped():
    html = task_section(results([model("<b>x</b>", 0.1, [1.0], [0.1])]))
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_section_goes_after_the_header_once(tmp_path):
    page = tmp_path / "index.html"
    page.write_text("<html><body><main><header><h1>t</h1></header><section>rest</section></main></body></html>")
    insert_section(page, "<section id=\"task\">old numbers</section>")
    insert_section(page, "<section id=\"task\">new numbers</section>")
    text = page.read_text()
    assert text.count("numbers") == 1 and "new numbers" in text
    assert text.index("</header>") < text.index("numbers") < text.index("rest")
