"""Headless Chromium (the Debian `chromium` package) for what a browser alone can check: that the report page
renders, and a screenshot of it for the README."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.errors import HarnessError

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]? (.*)")


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, NAMES) if path), None)


def _run(page: Path, *flags: str, timeout: float = 120) -> subprocess.CompletedProcess:
    browser = find_chromium()
    if browser is None:
        raise HarnessError("no Chromium found: install it (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
               "--v=0", f"--user-data-dir={profile}", "--virtual-time-budget=10000", *flags,
               Path(page).resolve().as_uri()]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def load(page: Path) -> tuple[str, list[str]]:
    """(the DOM after the page's scripts ran, every message the page wrote to the console)."""
    done = _run(page, "--dump-dom")
    return done.stdout, [m.group(1) for m in map(CONSOLE.search, done.stderr.splitlines()) if m]


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 2200) -> Path:
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    _run(page, f"--screenshot={Path(png).resolve()}", f"--window-size={width},{height}")
    if not Path(png).is_file():
        raise HarnessError(f"Chromium wrote no screenshot of {page}")
    return Path(png)
