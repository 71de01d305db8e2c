"""Self-contained HTML pages: one stylesheet, escaped tables, embedded PNG images.

Used by the inference run report and the EDA page; nothing here reads a run.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Iterable, Sequence
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


def _nice_step(span: float, target: int) -> float:
    """A 1, 2 or 5 times a power of ten, giving about ``target`` ticks over ``span``."""
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), 10 * mag)


def _svg_start(width: int, height: int, label: str, title: str, centre_x: float) -> list[str]:
    """The opening of an inline SVG chart: its tag, its accessible label and, when given, its visible title."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" font-family="sans-serif" font-size="11"><title>{esc(label)}</title>'
    ]
    if title:
        out.append(f'<text x="{centre_x:.1f}" y="18" text-anchor="middle" font-size="13">{esc(title)}</text>')
    return out


def _svg_y_grid(ticks: Iterable[float], y_of: Callable[[float], float], left: float, pw: float) -> list[str]:
    """Horizontal grid lines with their values on the left axis."""
    out = []
    for t in ticks:
        y = y_of(t)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t:.6g}</text>')
    return out


def _svg_x_ticks(lo: float, hi: float, x_of: Callable[[float], float], bottom: float, digits: int) -> list[str]:
    """About eight round ticks between ``lo`` and ``hi`` under the plot, labelled with ``digits`` significant digits."""
    out = []
    step = _nice_step(hi - lo, 8)
    for i in range(math.ceil(lo / step - 1e-9), int(math.floor(hi / step + 1e-9)) + 1):
        x = x_of(i * step)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#333"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{i * step:.{digits}g}</text>')
    return out


def _svg_frame(left: float, top: float, pw: float, ph: float, height: int, xlabel: str, ylabel: str) -> list[str]:
    """The plot's frame and its two axis labels (the left one turned upright)."""
    return [
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>',
        f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">{esc(xlabel)}</text>',
        f'<text transform="translate(14 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>',
    ]


def svg_histogram(
    values: Iterable[float | None],
    *,
    xlabel: str,
    title: str = "",
    bins: int = 20,
    value_range: tuple[float, float] | None = None,
    width: int = 640,
    height: int = 330,
) -> str:
    """A histogram as inline SVG, with the mean (dashed) and median (dotted) marked.

    Drawn without matplotlib, which costs a run report about 0.7 s to import and lay
    out in a fresh process; the report of a few-second run would pay that in full.
    Non-finite values and None are left out; ``n`` in the legend counts the rest.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    lo, hi = value_range if value_range is not None else ((float(v.min()), float(v.max())) if v.size else (0.0, 1.0))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    left, right, top, bottom = 56, 16, 30 if title else 12, 46
    pw, ph = width - left - right, height - top - bottom
    ymax = max(int(counts.max()) if counts.size else 0, 1)
    ystep = max(1, int(_nice_step(ymax, 5)))
    ytop = ystep * math.ceil(ymax / ystep)

    def x_of(value: float) -> float:
        return left + (value - lo) / (hi - lo) * pw

    def y_of(count: float) -> float:
        return top + ph - count / ytop * ph

    out = _svg_start(width, height, title or xlabel, title, left + pw / 2)
    out += _svg_y_grid(range(0, ytop + 1, ystep), y_of, left, pw)
    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        if c:
            x0, x1, y = x_of(float(a)), x_of(float(b)), y_of(c)
            out.append(
                f'<rect class="bar" x="{x0:.1f}" y="{y:.1f}" width="{x1 - x0:.1f}" height="{y_of(0) - y:.1f}" '
                f'fill="#1f77b4" stroke="#fff"><title>{a:.3g} to {b:.3g}: {c}</title></rect>'
            )
    out += _svg_x_ticks(lo, hi, x_of, top + ph, 4)
    out += _svg_frame(left, top, pw, ph, height, xlabel, "number of images")
    if v.size:
        legend = [f"n = {v.size}"]
        marks = (("mean", v.mean(), "6 4", "#000", "dashed"), ("median", np.median(v), "2 3", "#737373", "dotted"))
        for name, val, dash, color, style in marks:
            x = x_of(float(np.clip(val, lo, hi)))
            out.append(
                f'<line class="{name}" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="{color}" '
                f'stroke-dasharray="{dash}"/>'
            )
            legend.append(f"{name} {val:.3f} ({style})")
        for j, text in enumerate(legend):
            out.append(f'<text x="{left + 8}" y="{top + 16 + 14 * j}">{esc(text)}</text>')
    else:
        out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph / 2:.1f}" text-anchor="middle">no values</text>')
    return "".join(out) + "</svg>"


def svg_slice_profile(
    position_mm: Sequence[float],
    pred_pixels: Sequence[float],
    true_pixels: Sequence[float] | None,
    dice: Sequence[float | None] | None,
    *,
    title: str = "",
    width: int = 640,
    height: int = 300,
) -> str:
    """Liver area per axial slice (predicted, solid; true, dashed) against slice position, with the per-slice
    Dice (red, right axis) where either mask has liver, as inline SVG.

    Drawn without matplotlib for the reason :func:`svg_histogram` gives: the chart took a
    volume's run report 0.46 s in a fresh process (import and layout), this one a few ms.
    Slices whose Dice is None (neither mask has liver) break the Dice line.
    """
    x = np.asarray(position_mm, dtype=np.float64)
    pred = np.asarray(pred_pixels, dtype=np.float64)
    true = None if true_pixels is None else np.asarray(true_pixels, dtype=np.float64)
    left, right, top, bottom = 62, 52 if dice is not None else 16, 30 if title else 12, 44
    pw, ph = width - left - right, height - top - bottom
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    ymax = max(float(pred.max(initial=0.0)), float(true.max(initial=0.0)) if true is not None else 0.0, 1.0)
    ystep = _nice_step(ymax, 5)
    ytop = ystep * math.ceil(ymax / ystep)

    def px(v: float) -> float:
        return left + (v - lo) / (hi - lo) * pw

    def py(v: float, scale: float = ytop) -> float:
        return top + ph - v / scale * ph

    def line(values: np.ndarray, scale: float = ytop) -> str:
        return " ".join(f"{px(a):.1f},{py(b, scale):.1f}" for a, b in zip(x, values))

    out = _svg_start(width, height, title or "liver pixels per slice", title, left + pw / 2)
    out += _svg_y_grid([k * ystep for k in range(int(round(ytop / ystep)) + 1)], py, left, pw)
    out += _svg_x_ticks(lo, hi, px, top + ph, 6)
    legend = [("#1f77b4", "", "predicted liver pixels")]
    if x.size:
        out.append(f'<polyline class="pred" points="{line(pred)}" fill="none" stroke="#1f77b4" stroke-width="1.2"/>')
    if true is not None and x.size:
        out.append(
            f'<polyline class="true" points="{line(true)}" fill="none" stroke="#4d4d4d" stroke-dasharray="5 3"/>'
        )
        legend.append(("#4d4d4d", "5 3", "true"))
    if dice is not None:
        d = [None if v is None or not math.isfinite(v) else float(v) for v in dice]
        runs: list[list[int]] = []
        for i, v in enumerate(d):
            if v is None:
                continue
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        for run in runs:
            pts = " ".join(f"{px(x[i]):.1f},{py(d[i] or 0.0, 1.0):.1f}" for i in run)
            out.append(f'<polyline class="dice" points="{pts}" fill="none" stroke="#d62728" stroke-width="0.8"/>')
        for v in (0.0, 0.25, 0.5, 0.75, 1.0):
            y = py(v, 1.0)
            out.append(f'<text x="{left + pw + 6}" y="{y + 4:.1f}">{v:g}</text>')
        out.append(
            f'<text transform="translate({width - 10} {top + ph / 2:.1f}) rotate(90)" text-anchor="middle">Dice</text>'
        )
        legend.append(("#d62728", "", "Dice per slice"))
    out += _svg_frame(left, top, pw, ph, height, "slice position (mm, inferior to superior)", "liver pixels")
    out.append(
        f'<rect x="{left + 4}" y="{top + 4}" width="150" height="{14 * len(legend) + 6}" fill="#fff" '
        'fill-opacity="0.85"/>'
    )
    for j, (color, dash, text) in enumerate(legend):
        y = top + 14 + 14 * j
        out.append(
            f'<line x1="{left + 8}" x2="{left + 28}" y1="{y - 4}" y2="{y - 4}" stroke="{color}" stroke-width="1.5"'
            + (f' stroke-dasharray="{dash}"/>' if dash else "/>")
        )
        out.append(f'<text x="{left + 34}" y="{y}">{esc(text)}</text>')
    if not x.size:
        out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph / 2:.1f}" text-anchor="middle">no slices</text>')
    return "".join(out) + "</svg>"


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
