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


def plot_slice_profile(
    position_mm: Sequence[float],
    pred_pixels: Sequence[float],
    true_pixels: Sequence[float] | None,
    dice: Sequence[float | None] | None,
    out_path: str | os.PathLike[str] | None,
    *,
    title: str = "",
) -> Path | bytes:
    """Liver area per axial slice (predicted, and true) against slice position, with per-slice Dice on a second axis.

    Slices where neither mask has liver have no Dice and are left out of its line.
    """
    x = np.asarray(position_mm, dtype=np.float64)
    fig = figure(6.4, 3.0)
    ax = fig.subplots()
    ax.plot(x, np.asarray(pred_pixels, dtype=np.float64), color="C0", linewidth=1.2, label="predicted liver pixels")
    if true_pixels is not None:
        ax.plot(x, np.asarray(true_pixels, dtype=np.float64), color="0.3", linestyle="--", linewidth=1, label="true")
    ax.set_xlabel("slice position (mm, inferior to superior)")
    ax.set_ylabel("liver pixels")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if dice is not None:
        d = np.asarray([np.nan if v is None else v for v in dice], dtype=np.float64)
        ax2 = ax.twinx()
        ax2.plot(x, d, color="C3", marker=".", markersize=3, linewidth=0.8, label="Dice per slice")
        ax2.set_ylim(0, 1.02)
        ax2.set_ylabel("Dice")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=7, loc="upper left")
    if title:
        ax.set_title(title, fontsize=10)
    return finish(fig, out_path)
