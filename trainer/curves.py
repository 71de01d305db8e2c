"""Training curves (the study's Figures 6-9) from the trainer's ``epochs.csv`` or the study's ``metric_values.csv``.

The study's per-epoch ``metric_values.csv`` has an unnamed index column (epoch - 1),
then ``mPA,mIoU,train_loss,val_loss``; :func:`read_epochs` reads it as epochs 1..n, so
the study's Table 1 and a liverseg run draw side by side.

:func:`plot_training_curves` draws mPA/mIoU/Dice and train/validation loss per
epoch, per model and models side by side, on the pyplot-free figures of
:mod:`liverseg.core.charts`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from liverseg.core.charts import figure, finish

PathLike = str | os.PathLike[str]


def safe_name(label: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(label)).strip("._")
    return s or "model"


_METRIC_LINES = (("mPA", "mPA"), ("mIoU", "mIoU"), ("dice", "Dice"))
_LOSS_LINES = (("train_loss", "train loss"), ("val_loss", "validation loss"))


def read_epochs(path: Path):
    import pandas as pd

    if path.is_dir():
        path = path / "epochs.csv"
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: epochs table not found") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: epochs table is empty") from None
    first = str(df.columns[0]) if len(df.columns) else ""
    if "epoch" not in df.columns and (first == "" or first.startswith("Unnamed:")) and "mPA" in df.columns:
        df = df.rename(columns={df.columns[0]: "epoch"})  # the study's metric_values.csv: index = epoch - 1
        df["epoch"] = pd.to_numeric(df["epoch"], errors="coerce") + 1
        df.attrs["study"] = True  # it kept the final epoch: no best-epoch marker
    if "epoch" not in df.columns:
        raise ValueError(f"{path}: no 'epoch' column (columns: {list(df.columns)})")
    if len(df) == 0:
        raise ValueError(f"{path}: epochs table has a header but no epochs")
    for c in df.columns:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return path, df.sort_values("epoch")


def _keep_best(path: Path, df) -> str | None:
    """The metric that picked best.pt (``keep_best`` in the run's config.json), else mIoU; None for the study's."""
    if df.attrs.get("study"):
        return None
    try:
        key = json.loads((path.parent / "config.json").read_text(encoding="utf-8")).get("keep_best")
    except (OSError, ValueError, AttributeError):
        key = None
    return key if isinstance(key, str) and key in df.columns else "mIoU"


def _draw_lines(ax, df, lines, ylabel: str, *, best_of: str | None = None) -> bool:
    drawn = False
    marker = "o" if len(df) <= 30 else None
    for col, label in lines:
        if col in df.columns and df[col].notna().any():
            ax.plot(df["epoch"], df[col], marker=marker, markersize=3, label=label)
            drawn = True
    if best_of and best_of in df.columns and df[best_of].notna().any():
        i = df[best_of].idxmin() if "loss" in best_of else df[best_of].idxmax()
        ax.axvline(
            df.loc[i, "epoch"],
            color="0.6",
            linestyle=":",
            linewidth=1,
            label=f"best {best_of} (epoch {int(df.loc[i, 'epoch'])})",
        )
    if not drawn:
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return drawn


def _save(fig: Any, path: Path) -> Path:
    """``finish`` to a file: it returns the path (bytes only when given no path)."""
    out = finish(fig, path)
    return out if isinstance(out, Path) else path


def plot_training_curves(
    epochs_csv: PathLike | Sequence[PathLike], out_dir: PathLike, labels: Sequence[str] | None = None
) -> list[Path]:
    """Training curves from one or more ``epochs.csv`` (or run folders holding one).

    One table writes ``curves_metrics.png`` (mPA, mIoU and Dice on the validation
    set per epoch) and ``curves_loss.png`` (train and validation loss per epoch).
    Several write ``curves_<label>_metrics.png`` / ``curves_<label>_loss.png`` per
    model and ``curves_compare.png``: the models side by side, metrics on top and
    loss below, on shared axes. Labels default to the run folder names. Returns the
    written paths. Raises ValueError naming the file for a missing or empty table.
    """
    paths = [Path(epochs_csv)] if isinstance(epochs_csv, (str, os.PathLike)) else [Path(p) for p in epochs_csv]
    if not paths:
        raise ValueError("plot_training_curves needs at least one epochs table")
    tables = [read_epochs(p) for p in paths]
    best_of = [_keep_best(p, df) for p, df in tables]
    if labels is None:
        labels = [p.stem if p.name != "epochs.csv" else (p.parent.name or p.stem) for p, _ in tables]
    labels = [str(x) for x in labels]
    if len(labels) != len(tables):
        raise ValueError(f"{len(tables)} epochs tables but {len(labels)} labels")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    used: set[str] = set()
    for (_, df), label, best in zip(tables, labels, best_of):
        if len(tables) == 1:
            prefix = "curves_"
        else:
            stem = safe_name(label)
            k, base = 2, stem
            while stem in used:
                stem, k = f"{base}-{k}", k + 1
            used.add(stem)
            prefix = f"curves_{stem}_"
        fig = figure(6.4, 4.2)
        ax = fig.subplots()
        _draw_lines(ax, df, _METRIC_LINES, "validation score", best_of=best)
        ax.set_title(f"{label}: mPA and mIoU per epoch", fontsize=10)
        written.append(_save(fig, out_dir / f"{prefix}metrics.png"))
        fig = figure(6.4, 4.2)
        ax = fig.subplots()
        _draw_lines(ax, df, _LOSS_LINES, "loss")
        ax.set_title(f"{label}: training and validation loss per epoch", fontsize=10)
        written.append(_save(fig, out_dir / f"{prefix}loss.png"))
    if len(tables) > 1:
        n = len(tables)
        fig = figure(4.6 * n, 7.2)
        axes = fig.subplots(2, n, squeeze=False, sharey="row")
        for j, ((_, df), label, best) in enumerate(zip(tables, labels, best_of)):
            _draw_lines(axes[0, j], df, _METRIC_LINES, "validation score" if j == 0 else "", best_of=best)
            axes[0, j].set_title(f"{label}: mPA / mIoU", fontsize=10)
            _draw_lines(axes[1, j], df, _LOSS_LINES, "loss" if j == 0 else "")
            axes[1, j].set_title(f"{label}: loss", fontsize=10)
        written.append(_save(fig, out_dir / "curves_compare.png"))
    return written
