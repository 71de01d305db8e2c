"""Self-contained HTML pages: one stylesheet, escaped tables, embedded PNG images.

Used by the inference run report and the EDA page; nothing here reads a run.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:24px auto;
max-width:1200px;padding:0 16px;color:#1d1d1f;background:#fff;line-height:1.45}
h1{font-size:1.6em;margin-bottom:0.1em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:4px;
margin-top:1.8em}h3{font-size:1.05em;margin-top:1.4em}
.sub{color:#555;margin-top:0}
table{border-collapse:collapse;margin:8px 0 16px 0;font-size:0.92em}
th,td{border:1px solid #d6d6d6;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f3f3f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{background:#fff0f0}tr.skipped td{background:#fffbe6}
.kv th{width:220px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:130px}
.card .v{font-size:1.5em;font-weight:600}.card .k{color:#555;font-size:0.85em}
.card.bad{border-color:#d33;background:#fff5f5}
.banner{background:#fdecea;border-left:6px solid #c62828;padding:8px 14px;margin:12px 0}
.banner ul{margin:4px 0 0 0;padding-left:20px}
.warn{background:#fff4e5;border-left:4px solid #f0a000;padding:8px 12px;margin:10px 0}
.note{color:#555;font-size:0.92em}
.cases{display:flex;flex-wrap:wrap;gap:6px 24px}
figure{margin:10px 0 18px 0;max-width:100%}figcaption{font-size:0.9em;color:#333}
figure img{max-width:100%;height:auto;border:1px solid #ccc}
.legend span{display:inline-block;width:12px;height:12px;border:1px solid #666;margin:0 4px -2px 10px}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:0.88em}
pre{background:#f6f6f8;padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
footer{margin-top:32px;color:#777;font-size:0.85em}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` embedding the PNG bytes, with its pixel size."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        w, h = im.size
    return f'<img src="{png_data_uri(png)}" alt="{esc(alt)}" width="{w}" height="{h}">'


def array_png(rgb_or_gray: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb_or_gray)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def html_table(
    header: Sequence[str] | None,
    rows: Iterable[Sequence[Any]],
    *,
    numeric: Sequence[bool] | None = None,
    row_classes: Sequence[str] | None = None,
    cls: str = "",
) -> str:
    """A table; cells are escaped (pass :class:`Raw` for pre-built HTML). No header: a key/value table."""
    out = [f'<table class="{esc(cls)}">' if cls else "<table>"]
    if header:
        out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(rows):
        rc = row_classes[i] if row_classes is not None else ""
        out.append(f'<tr class="{esc(rc)}">' if rc else "<tr>")
        for j, cell in enumerate(row):
            num = numeric is not None and j < len(numeric) and numeric[j]
            text = cell.html if isinstance(cell, Raw) else esc(cell)
            tag = "th" if header is None and j == 0 else "td"
            out.append(f'<{tag} class="num">{text}</{tag}>' if num else f"<{tag}>{text}</{tag}>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


class Raw:
    """Already-escaped HTML for :func:`html_table`."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text


def html_page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:.{digits}f}"
    return str(value)
