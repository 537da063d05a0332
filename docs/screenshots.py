"""Screenshots of a report at 1280 px and 700 px (headless Chromium), for the docs.

    mlimpute demo && python docs/screenshots.py mlimpute-demo-output/report.html

writes docs/report-1280.png and docs/report-700.png (the top of the page: warnings, the forest
plot, the pooled tables and variance components).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from _chromium import chromium, screenshot  # noqa: E402

if __name__ == "__main__":
    if chromium() is None:
        sys.exit("headless Chromium is not installed (Debian: apt-get install chromium)")
    page = Path(sys.argv[1] if len(sys.argv) > 1 else "mlimpute-demo-output/report.html")
    for width, height in ((1280, 1800), (700, 2200)):
        print(screenshot(page, HERE / f"report-{width}.png", width, height))
