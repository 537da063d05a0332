"""Headless Chromium for looking at report.html as a person would: a screenshot, and the page's
scroll width at a given window width (wider than the window = a horizontal scroll bar)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["chromium", "screenshot", "scroll_width"]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def chromium() -> str | None:
    """The Chromium binary, or None (Debian: apt-get install chromium)."""
    return next((p for n in ("chromium", "chromium-browser", "google-chrome")
                 if (p := shutil.which(n))), None)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120, check=True)


def screenshot(page: Path, png: Path, width: int, height: int) -> Path:
    _run([f"--screenshot={png}", f"--window-size={width},{height}", page.resolve().as_uri()])
    return png


def scroll_width(page: Path, width: int) -> int:
    """``document.documentElement.scrollWidth`` of ``page`` in a ``width``-px window."""
    probe = page.with_name(page.stem + ".probe.html")
    script = ("<script>addEventListener('load',()=>{document.body.setAttribute("
              "'data-scroll-width',document.documentElement.scrollWidth)})</script>")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", script + "</body>"),
                     encoding="utf-8")
    out = _run([f"--window-size={width},1000", "--virtual-time-budget=5000", "--dump-dom",
                probe.resolve().as_uri()]).stdout
    found = re.search(r'data-scroll-width="(\d+)"', out)
    if not found:
        raise RuntimeError(f"no scroll width in Chromium's DOM dump: {out[:500]}")
    return int(found.group(1))
