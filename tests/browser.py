"""Open a local, self-contained HTML file in headless Chromium and report what a person would see.

    check = inspect_page(report_html, screenshot=tmp_path / "report.png")
    assert check.images_loaded == check.images_total and not check.console_errors

Uses the Debian packages ``chromium`` and ``chromium-driver`` (selenium 4 drives the system
chromedriver given explicitly, so Selenium Manager never runs and nothing is downloaded).
Tests call :func:`require_browser` first; it skips when either program is absent.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver",)
SKIP_REASON = ("no Chromium/chromedriver installed "
               "(Debian packages chromium, chromium-driver; .ci/run installs them)")

MAX_SCREENSHOT_HEIGHT = 16000  # px; a taller page is shot down to this height only (bounded memory)
IMAGE_WAIT_S = 10.0
POLL_S = 0.05

# What is decided inside the page in one call: load state, every image's fate, the page height.
_STATE_JS = """
const imgs = Array.from(document.images);
const doc = document.documentElement, body = document.body;
return {
  ready: document.readyState,
  images: imgs.map(i => ({complete: i.complete, loaded: i.complete && i.naturalWidth > 0,
                          src: i.currentSrc || i.getAttribute('src') || '', alt: i.alt || ''})),
  height: Math.max(doc ? doc.scrollHeight : 0, body ? body.scrollHeight : 0,
                   doc ? doc.offsetHeight : 0, body ? body.offsetHeight : 0),
  innerWidth: window.innerWidth, innerHeight: window.innerHeight,
  outerWidth: window.outerWidth, outerHeight: window.outerHeight,
};
"""
# Lazy images below the fold never load in a viewport-sized window: ask for all of them now.
_EAGER_JS = "document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; });"


@dataclass
class PageCheck:
    title: str
    images_total: int
    images_loaded: int
    broken_images: list[str] = field(default_factory=list)  # alt text, else the start of the src
    console_errors: list[str] = field(default_factory=list)  # SEVERE browser-log messages
    text: str = ""  # document.body.innerText
    screenshot: Path | None = None


def chromium_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) found on PATH, or None when either is missing."""
    browser = next((p for p in map(shutil.which, BROWSER_NAMES) if p), None)
    driver = next((p for p in map(shutil.which, DRIVER_NAMES) if p), None)
    return (browser, driver) if browser and driver else None


def require_browser() -> tuple[str, str]:
    """The (chromium, chromedriver) paths; skips the calling test when they or selenium are absent."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install 'lossbound[test]')")
    paths = chromium_paths()
    if paths is None:
        pytest.skip(SKIP_REASON)
    return paths


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) read from a PNG file's IHDR header."""
    head = Path(path).read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    return struct.unpack(">II", head[16:24])


def _describe(img: dict) -> str:
    if img["alt"]:
        return img["alt"]
    src = img["src"]
    return src if len(src) <= 80 else src[:77] + "..."


def _options(browser: str, profile: str, width: int, height: int):
    from selenium.webdriver import ChromeOptions

    opts = ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", f"--window-size={width},{height}",
        "--hide-scrollbars", "--force-device-scale-factor=1",
        # A self-contained page needs no network, and Chromium gets none: no updates, sync, sign-in,
        # pings or extensions; no host name resolves and any other request meets a closed local port
        # (so a page that does reference the web shows it as broken images and console errors).
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
        "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--no-pings",
        "--disable-features=Translate,OptimizationHints,MediaRouter,NetworkPrediction",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost",
        "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
    ):
        opts.add_argument(arg)
    # The first tab opens blank, not the new-tab page (which Debian's default search engine serves
    # from https://start.duckduckgo.com/).
    opts.add_experimental_option("prefs", {"session.restore_on_startup": 4,
                                           "session.startup_urls": ["about:blank"]})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return opts


def _wait_for_page(driver, deadline: float) -> dict:
    """Poll until the document is complete and every image has finished (loaded or failed)."""
    while True:
        state = driver.execute_script(_STATE_JS)
        done = state["ready"] == "complete" and all(i["complete"] for i in state["images"])
        if done or time.monotonic() > deadline:
            return state
        time.sleep(POLL_S)


def _severe(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def inspect_page(html: Path, *, screenshot: Path, width: int = 1400, height: int = 1000,
                 full_page: bool = True) -> PageCheck:
    """Open ``html`` in headless Chromium, wait for it and its images, save a screenshot and
    report what loaded. Images still pending after ~10 s count as broken."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        raise RuntimeError(SKIP_REASON)
    browser, driver_path = paths
    html = Path(html).resolve()
    if not html.is_file():
        raise FileNotFoundError(html)
    screenshot = Path(screenshot)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    # The driver path is given, so Selenium Manager is skipped; SE_OFFLINE guards any later change.
    os.environ.setdefault("SE_OFFLINE", "true")

    with tempfile.TemporaryDirectory(prefix="chromium-profile-", ignore_cleanup_errors=True) as profile:
        service = Service(driver_path, log_output=subprocess.DEVNULL)
        driver = webdriver.Chrome(service=service, options=_options(browser, profile, width, height))
        try:
            driver.set_page_load_timeout(30)
            driver.set_script_timeout(30)
            driver.get(html.as_uri())
            driver.execute_script(_EAGER_JS)
            state = _wait_for_page(driver, time.monotonic() + IMAGE_WAIT_S)
            errors = _severe(driver)  # reading the log empties it; collect once more at the end

            # --window-size is the outer size; headless Chromium still subtracts room for a toolbar
            # (1000 -> 857 px), so resize by that difference to get a width x height viewport, or a
            # viewport as tall as the document for a full-page shot.
            dx = max(state["outerWidth"] - state["innerWidth"], 0)
            dy = max(state["outerHeight"] - state["innerHeight"], 0)
            view_h = min(max(state["height"], height), MAX_SCREENSHOT_HEIGHT) if full_page else height
            if (state["innerWidth"], state["innerHeight"]) != (width, view_h):
                driver.set_window_size(width + dx, view_h + dy)
                # A taller viewport can start more lazy work; wait for it again (usually no wait).
                state = _wait_for_page(driver, time.monotonic() + IMAGE_WAIT_S)
            # Two animation frames: layout and paint have caught up with the resize.
            driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "requestAnimationFrame(() => requestAnimationFrame(() => done(true)));"
                "setTimeout(() => done(false), 1000);"  # never hang on a throttled frame clock
            )
            if not driver.save_screenshot(str(screenshot)):
                raise RuntimeError(f"Chromium could not write the screenshot {screenshot}")

            images = state["images"]
            return PageCheck(
                title=driver.title,
                images_total=len(images),
                images_loaded=sum(i["loaded"] for i in images),
                broken_images=[_describe(i) for i in images if not i["loaded"]],
                console_errors=errors + _severe(driver),
                text=driver.execute_script("return document.body ? document.body.innerText : '';"),
                screenshot=screenshot,
            )
        finally:
            driver.quit()
