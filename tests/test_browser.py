"""The headless-Chromium page check (tests/browser.py): it sees loaded images, and it can fail."""
from __future__ import annotations

import base64
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

from browser import inspect_page, png_size, require_browser


@pytest.fixture(autouse=True)
def _offline_driver(monkeypatch):
    """Chromium is there, and Selenium Manager (which may download drivers) is never asked."""
    require_browser()
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def refuse(*args, **kwargs):
        raise AssertionError("Selenium Manager was invoked; the helper must pass chromedriver's path")

    monkeypatch.setattr(SeleniumManager, "binary_paths", refuse)


def _png_data_uri(seed: int) -> str:
    from matplotlib.figure import Figure

    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(np.cumsum(rng.normal(size=200)), label=f"series {seed}")
    ax.imshow(rng.random((20, 40)), extent=(0, 200, -5, 5), aspect="auto", alpha=0.4)
    ax.legend()
    buf = BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _write(path: Path, title: str, body: str) -> Path:
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
                    f"<body>{body}</body></html>", encoding="utf-8")
    return path


def test_report_page_images_load_and_screenshot_covers_the_page(tmp_path):
    rows = "".join(f"<tr><td>codec-{i}</td><td>{10.0 ** -i:.0e}</td><td>pass</td></tr>" for i in range(6))
    html = _write(tmp_path / "report.html", "Codec thresholds", (
        "<h1>Codec thresholds</h1>"
        f"<img alt='sinogram error' src='{_png_data_uri(1)}'>"
        f"<img alt='profile error' src='{_png_data_uri(2)}' style='display:block'>"
        "<table border='1'><tr><th>codec</th><th>bound</th><th>verdict</th></tr>" + rows + "</table>"
    ))

    check = inspect_page(html, screenshot=tmp_path / "shots" / "report.png")

    assert check.title == "Codec thresholds"
    assert (check.images_total, check.images_loaded) == (2, 2), check.broken_images
    assert check.broken_images == []
    assert check.console_errors == []
    assert "codec-5" in check.text and "verdict" in check.text
    assert check.screenshot == tmp_path / "shots" / "report.png" and check.screenshot.is_file()
    assert check.screenshot.stat().st_size > 5_000
    w, h = png_size(check.screenshot)
    assert w >= 1000
    # heading + two 500 px figures + table: taller than the 1000 px window, so full-page grew it
    assert h > 1000


def test_broken_image_and_console_error_are_reported(tmp_path):
    html = _write(tmp_path / "broken.html", "Broken", (
        "<p>before</p>"
        "<img src='data:image/png;base64,AAAA'>"
        "<script>console.error(\"boom\")</script>"
        "<p>after</p>"
    ))

    check = inspect_page(html, screenshot=tmp_path / "broken.png", full_page=False)

    assert (check.images_total, check.images_loaded) == (1, 0)
    assert check.broken_images == ["data:image/png;base64,AAAA"]
    assert any("boom" in m for m in check.console_errors), check.console_errors
    assert "before" in check.text and "after" in check.text
    assert png_size(check.screenshot) == (1400, 1000)  # full_page=False keeps the window size
