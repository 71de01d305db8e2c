"""matplotlib plumbing every chart shares, and a plain histogram (the study's figures; the run
report draws its histograms as inline SVG, :func:`liverseg.core.html.svg_histogram`, without matplotlib).

matplotlib is imported inside the functions only. They draw on a bare
``matplotlib.figure.Figure`` with the Agg canvas and never touch ``pyplot``, so they
run headless, leak no global figures and leave a caller's pyplot backend alone.
A chart function takes ``out_path``: a path writes the PNG there and returns the
path; ``None`` returns the PNG bytes (for embedding in HTML).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DPI = 100


def figure(width_in: float, height_in: float) -> Any:
    """A pyplot-free Figure on the Agg canvas (headless, nothing global)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def finish(fig: Any, out_path: str | os.PathLike[str] | None) -> Path | bytes:
    if out_path is None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        return buf.getvalue()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI)
    return out


def plot_histogram(
    values: Sequence[float],
    out_path: str | os.PathLike[str] | None,
    *,
    xlabel: str,
    title: str = "",
    bins: int = 20,
    value_range: tuple[float, float] | None = None,
    color: str = "C0",
) -> Path | bytes:
    """A plain histogram with mean and median marked (the report's per-image Dice)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    fig = figure(6.4, 3.6)
    ax = fig.subplots()
    if v.size:
        ax.hist(v, bins=bins, range=value_range, color=color, edgecolor="white")
        ax.axvline(float(v.mean()), color="black", linestyle="--", linewidth=1, label=f"mean {v.mean():.3f}")
        ax.axvline(float(np.median(v)), color="0.45", linestyle=":", linewidth=1, label=f"median {np.median(v):.3f}")
        ax.legend(title=f"n = {v.size}", fontsize=8, title_fontsize=8)
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("number of images")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return finish(fig, out_path)
