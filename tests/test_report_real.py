"""Reports of real watched models (gradscope.watch), and one of them in a real headless
Chromium: it loads offline, every image decodes, the console stays clean, and a hostile run
name shows up as text, not as markup."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest

import torch

import gradscope
from gradscope.reporting import compare, report
from test_report_render import HOSTILE_RUN, assert_valid_pngs, image_sources

CHROMEDRIVER = Path("/usr/bin/chromedriver")


def browser_missing():
    """Why no headless Chromium can run here, or None when one can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium; it is in gradscope's dev extra)"
    if not (shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")):
        return "no chromium binary (Debian: apt-get install chromium chromium-driver)"
    if not (CHROMEDRIVER.exists() or shutil.which("chromedriver")):
        return "no chromedriver (Debian: apt-get install chromium-driver)"
    return None


def open_pages(pages, screenshot=None):
    """Load each page in a fresh headless Chromium; return per page the image states, the
    console log, the URLs the page requested, the document title and whether an alert opened."""
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="gradscope-chromium-")
    options = Options()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver_path = str(CHROMEDRIVER) if CHROMEDRIVER.exists() else shutil.which("chromedriver")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    results = []
    try:
        for page in pages:
            driver.get_log("performance")  # drop what the start-up tab requested
            driver.get_log("browser")
            driver.get(Path(page).resolve().as_uri())
            driver.execute_script("return document.readyState")
            images = driver.execute_script(
                "return Array.from(document.images).map(i => ({src: i.getAttribute('src'),"
                " complete: i.complete, width: i.naturalWidth}))")
            requested = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
            urls = [m["params"]["request"]["url"] for m in requested if m.get("method") == "Network.requestWillBeSent"]
            try:
                driver.switch_to.alert
                alerted = True
            except NoAlertPresentException:
                alerted = False
            if screenshot:
                height = driver.execute_script("return document.documentElement.scrollHeight")
                driver.set_window_size(1280, min(height + 120, 12000))
                driver.save_screenshot(str(screenshot))
            results.append({"images": images, "console": driver.get_log("browser"), "urls": urls,
                            "title": driver.title, "alerted": alerted})
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return results


def check_loaded_cleanly(result):
    assert result["images"], "the page shows no image"
    for image in result["images"]:
        assert image["complete"] and image["width"] > 0, f"{image['src']} did not load"
    severe = [entry for entry in result["console"] if entry.get("level") == "SEVERE"]
    assert not severe, severe
    outside = [url for url in result["urls"] if url.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp")]
    assert not outside, f"the page reached out to {outside}"
    assert any(url.endswith(".png") for url in result["urls"]), "the request log saw no figure"
    assert not result["alerted"]


HOSTILE_KEY = "<b>enc</b>"  # a ModuleDict key: module names can hold markup too


def train(model, head, steps, T, scope_kwargs):
    """A few SGD steps on a last-step regression, under watch; returns the stopped Scope."""
    torch.manual_seed(0)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=0.05)
    with gradscope.watch(model, **scope_kwargs) as scope:
        for _ in range(steps):
            x = torch.randn(T, 3, 4)
            out, _ = model[HOSTILE_KEY](x) if isinstance(model, torch.nn.ModuleDict) else model(x)
            loss = head(out[-1]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return scope


@pytest.fixture(scope="module")
def real_page(tmp_path_factory):
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({HOSTILE_KEY: torch.nn.LSTM(4, 8, bidirectional=True)})
    scope = train(model, torch.nn.Linear(16, 1), steps=3, T=16,
                  scope_kwargs=dict(jacobians=True, name=HOSTILE_RUN))
    out = tmp_path_factory.mktemp("real")
    return scope, report(scope, out / "report")


def test_a_watched_lstm_renders_with_its_figures(real_page):
    scope, page = real_page
    sources = assert_valid_pngs(page)
    kinds = {s.split("-")[1] for s in sources}
    assert {"gain", "timesteps", "heatmap", "gates"} <= kinds
    if len(scope.spectra()):
        assert "spectrum" in kinds
    if len(scope.jacobians()):
        assert {"jacobians", "lyapunov"} <= kinds
    text = page.read_text(encoding="utf-8")
    assert "&lt;b&gt;enc&lt;/b&gt;" in text and "<b>enc</b>" not in text
    assert HOSTILE_RUN not in text


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_the_report_renders_in_headless_chromium(real_page, tmp_path):
    _, page = real_page
    (result,) = open_pages([page], screenshot=tmp_path / "screenshot.png")
    check_loaded_cleanly(result)
    assert result["title"] == f"gradscope report: {HOSTILE_RUN}"  # shown as text, never run
    assert len(result["images"]) == len(image_sources(page.read_text(encoding="utf-8")))
    assert (tmp_path / "screenshot.png").stat().st_size > 10_000


def test_rnn_gru_lstm_compare_from_a_scope_a_run_folder_and_a_run(tmp_path):
    scopes = {}
    for name, cls in (("RNN", torch.nn.RNN), ("GRU", torch.nn.GRU), ("LSTM", torch.nn.LSTM)):
        torch.manual_seed(1)
        run_dir = tmp_path / "runs" / name if name != "RNN" else None
        scopes[name] = train(cls(4, 8), torch.nn.Linear(8, 1), steps=2, T=12,
                             scope_kwargs=dict(run_dir=run_dir, name=name))
    sources = {"RNN": scopes["RNN"], "GRU": tmp_path / "runs" / "GRU",
               "LSTM": gradscope.load(tmp_path / "runs" / "LSTM")}
    page = compare(sources, tmp_path / "cmp")
    text = page.read_text(encoding="utf-8")
    for name in sources:
        assert f"<h3>{name}</h3>" in text
    kinds = {s.split("-")[1] for s in assert_valid_pngs(page)}
    assert {"gain", "timesteps", "heatmap"} <= kinds
