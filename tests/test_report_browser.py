"""The report in a real headless Chromium: it loads offline, every image decodes, the console
stays clean, and a hostile run name shows up as text, not as markup."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from gradscope.report import report
from test_report_fakes import FakeSource
from test_report_render import HOSTILE_RUN

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


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_report_renders_in_headless_chromium(tmp_path):
    source = FakeSource(name=HOSTILE_RUN, cell="GRU", layers=1, directions=("forward", "reverse"),
                        T=10, steps=2, jacobians=True)
    page = report(source, tmp_path / "report")
    (result,) = open_pages([page], screenshot=tmp_path / "screenshot.png")
    check_loaded_cleanly(result)
    assert result["title"] == f"gradscope report: {HOSTILE_RUN}"  # shown as text, never run
    assert len(result["images"]) >= 6
    assert (tmp_path / "screenshot.png").stat().st_size > 10_000
