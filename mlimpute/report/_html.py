"""HTML pieces of the report: numbers to sensible digits, tables that scroll on a narrow screen."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["CSS", "fmt", "table", "info", "bullets"]

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em auto;max-width:72em;
color:#222;padding:0 1em;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.3em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ccc}
h3{font-size:1.05em;margin-bottom:.3em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em;font-variant-numeric:tabular-nums}
th,td{padding:.25em .6em;border-bottom:1px solid #e5e5e5;text-align:right;white-space:nowrap}
th{background:#f4f4f4}td.l,th.l{text-align:left}td.w{white-space:normal}
tr.warn td{background:#fde2e1;color:#8a0010;font-weight:600}
.warnings li{color:#8a0010}.ok{color:#17633a}.note{color:#555;font-size:.9em;max-width:60em}
code{font-size:.95em;overflow-wrap:anywhere}
img{max-width:100%;height:auto}
details{margin:.5em 0}summary{cursor:pointer;color:#1f5a99}
@media (max-width:760px){body{padding:0 .5em;margin-top:.8em}th,td{padding:.2em .35em}
h1{font-size:1.25em}}
"""

# significant digits by column: estimates 3, intervals like their estimate, FMI/RIV 2 decimals
_DECIMALS = {"riv": 2, "fmi": 2, "rhat": 3, "ess_bulk": 0, "ess_tail": 0, "rows": 0}


def fmt(v: Any, column: str = "") -> str:
    """A cell: p-values as <0.001 or 2 significant digits, df as an integer when large,
    FMI/RIV to 2 decimals, R-hat to 3, ESS whole, anything else to 3 significant digits."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if np.isinf(x):
            return "∞" if x > 0 else "−∞"
        if column == "p_value":
            return "&lt;0.001" if x < 0.001 else f"{x:.2g}"
        if column == "df":
            return f"{x:,.0f}" if abs(x) >= 10 else f"{x:.1f}"
        if column in _DECIMALS:
            return f"{x:,.{_DECIMALS[column]}f}"
        if x != 0 and (abs(x) < 1e-4 or abs(x) >= 1e6):
            return f"{x:.2e}"
        return f"{x:#.3g}".rstrip(".") if abs(x) < 1000 else f"{x:,.0f}"
    return html.escape(str(v))


def table(df: pd.DataFrame, flags: np.ndarray | None = None, text_cols: Sequence[str] = (),
          headers: Mapping[str, str] | None = None) -> str:
    """A table in a horizontally scrolling box (a narrow screen scrolls it, not the page)."""
    headers = headers or {}
    head = "".join(f'<th class="{"l" if c in text_cols else ""}">'
                   f'{html.escape(headers.get(str(c), str(c)))}</th>' for c in df.columns)
    rows = []
    for i, row in enumerate(df.itertuples(index=False)):
        cls = ' class="warn"' if flags is not None and flags[i] else ""
        cells = "".join(f'<td class="{"l" if c in text_cols else ""}">{fmt(v, str(c))}</td>'
                        for c, v in zip(df.columns, row))
        rows.append(f"<tr{cls}>{cells}</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def info(rows: Mapping[str, Any]) -> str:
    body = "".join(f'<tr><th class="l">{html.escape(str(k))}</th><td class="l w">{fmt(v)}</td></tr>'
                   for k, v in rows.items())
    return f'<div class="scroll"><table>{body}</table></div>'


def bullets(items: Sequence[str]) -> str:
    return '<ul class="warnings">' + "".join(f"<li>{html.escape(w)}</li>" for w in items) + "</ul>"
