"""Debian's chromium, headless, driven by playwright-python: never a browser
of playwright's own download (scripts/test installs the Debian package when it
is missing). Also: reading a screenshot's pixels."""

from __future__ import annotations

import io
import shutil
from contextlib import contextmanager

from PIL import Image
from playwright.sync_api import sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


@contextmanager
def chromium():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def colours(png: bytes) -> set[tuple[int, int, int]]:
    """Every RGB colour in a screenshot."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return {rgb for _, rgb in image.getcolors(maxcolors=1 << 24)}


def has_colour(png: bytes, hex_colour: str, tolerance: int = 12) -> bool:
    """Whether a screenshot holds (anti-aliasing aside) the colour #rrggbb."""
    want = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return any(all(abs(a - b) <= tolerance for a, b in zip(rgb, want)) for rgb in colours(png))
