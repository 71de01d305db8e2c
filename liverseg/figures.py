"""The study's figures, drawn from the user's own data and runs.

* :func:`overlay_rgb` -- the study's colouring of a prediction against the truth
  (true positive white, false positive blue, false negative red) or, without a
  truth, the prediction's outline on the image. Pure numpy: the inference runner
  imports it, so this module must stay light.
* :func:`save_overlay`, :func:`plot_panel` / :func:`plot_panels` -- overlays as PNG
  files and the side-by-side panel image | ground truth | prediction(s) of several
  models (the study's Figures 10-16).
* :func:`plot_training_curves` -- mPA/mIoU and train/validation loss per epoch from
  the trainer's ``epochs.csv``, per model and models side by side (Figures 6-9).
* :func:`plot_liver_histogram`, :func:`plot_split_bars`,
  :func:`plot_intensity_histograms`, :func:`plot_histogram` -- data summaries
  (Figures 1-5) and the report's per-image Dice histogram.

matplotlib is imported inside the plotting functions only. They draw on a bare
``matplotlib.figure.Figure`` with the Agg canvas and never touch ``pyplot``, so they
run headless, leak no global figures and leave a caller's pyplot backend alone.
Every plotting function takes ``out_path``: a path writes the PNG there and returns
the path; ``None`` returns the PNG bytes (for embedding in HTML).
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The study's colours (RGB).
TP_COLOR = (255, 255, 255)
FP_COLOR = (0, 0, 255)
FN_COLOR = (255, 0, 0)
# Outline of a prediction when no truth is known.
OUTLINE_COLOR = (0, 255, 0)
DEFAULT_ALPHA = 0.65
DPI = 100

PathLike = str | os.PathLike


# ---------------------------------------------------------------- pure numpy


def _as_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img.astype(np.float64)), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 3:
        return img.copy()
    if img.ndim == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    raise ValueError(f"image must be HxW or HxWx3, got shape {img.shape}")


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion; pixels outside the image count as background."""
    p = np.pad(mask, 1, mode="constant", constant_values=False)
    return p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def outline(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """bool [H, W]: the inner band of ``thickness`` pixels along the mask's border."""
    m = np.asarray(mask, dtype=bool)
    inner = m
    for _ in range(max(1, int(thickness))):
        inner = _erode(inner)
    return m & ~inner


def _blend(rgb: np.ndarray, where: np.ndarray, color: Sequence[int], alpha: float) -> None:
    if not where.any():
        return
    c = np.asarray(color, dtype=np.float64)
    px = rgb[where].astype(np.float64)
    rgb[where] = np.clip(np.rint(alpha * c + (1.0 - alpha) * px), 0, 255).astype(np.uint8)


def overlay_rgb(image_u8: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None, *,
                alpha: float = DEFAULT_ALPHA, thickness: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3]: the prediction drawn on the gray image.

    With ``truth``: the study's colouring, blended with ``alpha`` over the image --
    true positive white, false positive blue, false negative red, true negative
    left as the image. Without: the prediction's outline (green, opaque) of
    ``thickness`` pixels (default: 1 per 256 pixels of the larger side, at least 1).
    """
    rgb = _as_rgb(image_u8)
    h, w = rgb.shape[:2]
    p = np.asarray(pred, dtype=bool)
    if p.shape != (h, w):
        raise ValueError(f"prediction shape {p.shape} != image shape {(h, w)}")
    if truth is None:
        t = thickness if thickness is not None else max(1, round(max(h, w) / 256))
        rgb[outline(p, t)] = OUTLINE_COLOR
        return rgb
    tr = np.asarray(truth, dtype=bool)
    if tr.shape != (h, w):
        raise ValueError(f"truth shape {tr.shape} != image shape {(h, w)}")
    _blend(rgb, p & tr, TP_COLOR, alpha)
    _blend(rgb, p & ~tr, FP_COLOR, alpha)
    _blend(rgb, ~p & tr, FN_COLOR, alpha)
    return rgb


def save_overlay(path: PathLike, image: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None,
                 **kwargs: Any) -> Path:
    """Write :func:`overlay_rgb` as an RGB PNG (Pillow; no matplotlib)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_rgb(image, pred, truth, **kwargs)).save(path, format="PNG")
    return path


# ---------------------------------------------------------------- matplotlib plumbing


def _figure(width_in: float, height_in: float):
    """A pyplot-free Figure on the Agg canvas (headless, nothing global)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig, out_path: PathLike | None) -> Path | bytes:
    if out_path is None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        return buf.getvalue()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI)
    return out


def _safe_name(label: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(label)).strip("._")
    return s or "model"


# ---------------------------------------------------------------- panels (Figures 10-16)


def _legend_handles(with_truth: bool):
    from matplotlib.patches import Patch

    if not with_truth:
        return [Patch(facecolor=np.array(OUTLINE_COLOR) / 255, edgecolor="black", label="predicted outline")]
    return [Patch(facecolor=np.array(c) / 255, edgecolor="black", label=n)
            for c, n in ((TP_COLOR, "true positive"), (FP_COLOR, "false positive"), (FN_COLOR, "false negative"))]


def plot_panels(images: Sequence[np.ndarray], truths: Sequence[np.ndarray | None],
                preds: Sequence[Mapping[str, np.ndarray]], out_path: PathLike | None, *,
                row_titles: Sequence[str] | None = None, title: str | None = None,
                cell_inches: float = 2.6) -> Path | bytes:
    """Rows of image | ground truth | one overlay per model (the study's Figures 10-16).

    ``preds[i]`` maps a model name to its bool mask for ``images[i]``; every row
    must name the same models. A row whose truth is None shows the outline of each
    prediction instead of the study's colouring and no truth column cell.
    """
    from liverseg.metrics import image_scores

    n = len(images)
    if n == 0:
        raise ValueError("plot_panels needs at least one image")
    if len(truths) != n or len(preds) != n:
        raise ValueError(f"{n} images but {len(truths)} truths and {len(preds)} prediction sets")
    names = list(preds[0].keys())
    for i, p in enumerate(preds):
        if list(p.keys()) != names:
            raise ValueError(f"row {i} names models {list(p.keys())}, row 0 names {names}")
    any_truth = any(t is not None for t in truths)
    ncols = 1 + int(any_truth) + len(names)
    fig = _figure(cell_inches * ncols, cell_inches * n + 0.9)
    axes = fig.subplots(n, ncols, squeeze=False)
    for i in range(n):
        img = np.asarray(images[i])
        truth = truths[i]
        col = 0
        ax = axes[i, col]
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title("image" if i == 0 else "", fontsize=10)
        if row_titles is not None:
            ax.set_ylabel(str(row_titles[i]), fontsize=9)
        col += 1
        if any_truth:
            ax = axes[i, col]
            if truth is not None:
                ax.imshow(np.asarray(truth, dtype=bool), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes, fontsize=9)
            ax.set_title("ground truth" if i == 0 else "", fontsize=10)
            col += 1
        for name in names:
            ax = axes[i, col]
            mask = np.asarray(preds[i][name], dtype=bool)
            ax.imshow(overlay_rgb(img, mask, truth), interpolation="nearest")
            label = str(name)
            if truth is not None:
                s = image_scores(mask, truth)
                label += f"\nDice {s['dice']:.3f}  mIoU {s['mIoU']:.3f}"
            ax.set_title(label, fontsize=9)
            col += 1
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    fig.legend(handles=_legend_handles(any_truth), loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return _finish(fig, out_path)


def plot_panel(image: np.ndarray, truth: np.ndarray | None, preds: Mapping[str, np.ndarray],
               out_path: PathLike | None, *, title: str | None = None) -> Path | bytes:
    """One row: image | ground truth | each model's overlay (see :func:`plot_panels`)."""
    return plot_panels([image], [truth], [preds], out_path, title=title)


# ---------------------------------------------------------------- training curves (Figures 6-9)

_METRIC_LINES = (("mPA", "mPA"), ("mIoU", "mIoU"), ("dice", "Dice"))
_LOSS_LINES = (("train_loss", "train loss"), ("val_loss", "validation loss"))


def _read_epochs(path: Path):
    import pandas as pd

    if path.is_dir():
        path = path / "epochs.csv"
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: epochs table not found") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: epochs table is empty") from None
    if "epoch" not in df.columns:
        raise ValueError(f"{path}: no 'epoch' column (columns: {list(df.columns)})")
    if len(df) == 0:
        raise ValueError(f"{path}: epochs table has a header but no epochs")
    for c in df.columns:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return path, df.sort_values("epoch")


def _keep_best(path: Path, df) -> str:
    """The metric that picked best.pt (``keep_best`` in the run's config.json), else mIoU."""
    import json

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
        ax.axvline(df.loc[i, "epoch"], color="0.6", linestyle=":", linewidth=1,
                   label=f"best {best_of} (epoch {int(df.loc[i, 'epoch'])})")
    if not drawn:
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return drawn


def plot_training_curves(epochs_csv: PathLike | Sequence[PathLike], out_dir: PathLike,
                         labels: Sequence[str] | None = None) -> list[Path]:
    """Training curves from one or more ``epochs.csv`` (or run folders holding one).

    One table writes ``curves_metrics.png`` (mPA, mIoU and Dice on the validation
    set per epoch) and ``curves_loss.png`` (train and validation loss per epoch).
    Several write ``curves_<label>_metrics.png`` / ``curves_<label>_loss.png`` per
    model and ``curves_compare.png``: the models side by side, metrics on top and
    loss below, on shared axes. Labels default to the run folder names. Returns the
    written paths. Raises ValueError naming the file for a missing or empty table.
    """
    single = isinstance(epochs_csv, (str, os.PathLike))
    paths = [Path(epochs_csv)] if single else [Path(p) for p in epochs_csv]
    if not paths:
        raise ValueError("plot_training_curves needs at least one epochs table")
    tables = [_read_epochs(p) for p in paths]
    best_of = [_keep_best(p, df) for p, df in tables]
    if labels is None:
        labels = [p.parent.name or p.stem for p, _ in tables]
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
            stem = _safe_name(label)
            k, base = 2, stem
            while stem in used:
                stem, k = f"{base}-{k}", k + 1
            used.add(stem)
            prefix = f"curves_{stem}_"
        fig = _figure(6.4, 4.2)
        ax = fig.subplots()
        _draw_lines(ax, df, _METRIC_LINES, "validation score", best_of=best)
        ax.set_title(f"{label}: mPA and mIoU per epoch", fontsize=10)
        written.append(_finish(fig, out_dir / f"{prefix}metrics.png"))
        fig = _figure(6.4, 4.2)
        ax = fig.subplots()
        _draw_lines(ax, df, _LOSS_LINES, "loss")
        ax.set_title(f"{label}: training and validation loss per epoch", fontsize=10)
        written.append(_finish(fig, out_dir / f"{prefix}loss.png"))
    if len(tables) > 1:
        n = len(tables)
        fig = _figure(4.6 * n, 7.2)
        axes = fig.subplots(2, n, squeeze=False, sharey="row")
        for j, ((_, df), label, best) in enumerate(zip(tables, labels, best_of)):
            _draw_lines(axes[0, j], df, _METRIC_LINES, "validation score" if j == 0 else "", best_of=best)
            axes[0, j].set_title(f"{label}: mPA / mIoU", fontsize=10)
            _draw_lines(axes[1, j], df, _LOSS_LINES, "loss" if j == 0 else "")
            axes[1, j].set_title(f"{label}: loss", fontsize=10)
        written.append(_finish(fig, out_dir / "curves_compare.png"))
    return written


# ---------------------------------------------------------------- data summaries (Figures 1-5)


def plot_liver_histogram(percent: Sequence[float], out_path: PathLike | None, *, title: str = "",
                         bins: int = 20, color: str = "C0", max_percent: float | None = None) -> Path | bytes:
    """Histogram of the liver-pixel percentage per mask (the study's Figures 1-4).

    ``max_percent`` fixes the x range (0..max_percent), so that the histograms of
    several splits share their bins and compare at a glance.
    """
    v = np.asarray([x for x in percent if x is not None and math.isfinite(x)], dtype=np.float64)
    fig = _figure(5.6, 3.9)
    ax = fig.subplots()
    if v.size:
        top = max(float(max_percent if max_percent is not None else v.max()), 1e-9)
        ax.hist(v, bins=bins, range=(0.0, top), color=color, edgecolor="white")
        mean, med = float(v.mean()), float(np.median(v))
        ax.axvline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.2f}%")
        ax.axvline(med, color="0.45", linestyle=":", linewidth=1, label=f"median {med:.2f}%")
        empty = int(np.count_nonzero(v == 0))
        ax.legend(title=f"n = {v.size}, empty masks = {empty}", fontsize=8, title_fontsize=8)
    else:
        ax.text(0.5, 0.5, "no masks", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("liver pixels (% of the image)")
    ax.set_ylabel("number of masks")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title or "Liver-pixel percentage per mask", fontsize=10)
    return _finish(fig, out_path)


def plot_split_bars(names: Sequence[str], means: Sequence[float], stds: Sequence[float],
                    out_path: PathLike | None, *, ylabel: str = "liver pixels (% of the image)",
                    title: str = "Mean and standard deviation per split",
                    colors: Sequence[str] | None = None) -> Path | bytes:
    """Bar chart of mean with a standard-deviation error bar per split (Figure 5)."""
    fig = _figure(min(11.0, max(4.0, 1.2 * len(names) + 1.5)), 3.9)
    ax = fig.subplots()
    x = np.arange(len(names))
    m = np.asarray(means, dtype=np.float64)
    s = np.asarray(stds, dtype=np.float64)
    colors = list(colors) if colors is not None else [f"C{i % 10}" for i in range(len(names))]
    bars = ax.bar(x, m, yerr=s, capsize=6, color=colors, alpha=0.85)
    ax.bar_label(bars, labels=[f"{a:.2f} ± {b:.2f}" for a, b in zip(m, s)], fontsize=8, padding=2)
    ax.set_xticks(x, [str(n) for n in names])
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, float(np.nanmax(m + s)) * 1.2 + 1e-9 if len(m) else 1)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _finish(fig, out_path)


def plot_intensity_histograms(hists: Mapping[str, np.ndarray], out_path: PathLike | None, *,
                              title: str = "Pixel intensity per split") -> Path | bytes:
    """Normalised 256-bin gray-level histograms, one line per split (log scale)."""
    fig = _figure(5.6, 3.9)
    ax = fig.subplots()
    for i, (name, h) in enumerate(hists.items()):
        h = np.asarray(h, dtype=np.float64)
        total = h.sum()
        if total > 0:
            ax.plot(np.arange(h.size), h / total, label=str(name), color=f"C{i % 10}", linewidth=1.2)
    ax.set_yscale("log")
    ax.set_xlim(0, 255)
    ax.set_xlabel("gray level")
    ax.set_ylabel("fraction of pixels")
    ax.grid(True, alpha=0.3)
    if hists:
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _finish(fig, out_path)


def plot_histogram(values: Sequence[float], out_path: PathLike | None, *, xlabel: str, title: str = "",
                   bins: int = 20, value_range: tuple[float, float] | None = None,
                   color: str = "C0") -> Path | bytes:
    """A plain histogram with mean and median marked (the report's per-image Dice)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    fig = _figure(6.4, 3.6)
    ax = fig.subplots()
    if v.size:
        ax.hist(v, bins=bins, range=value_range, color=color, edgecolor="white")
        ax.axvline(float(v.mean()), color="black", linestyle="--", linewidth=1, label=f"mean {v.mean():.3f}")
        ax.axvline(float(np.median(v)), color="0.45", linestyle=":", linewidth=1,
                   label=f"median {np.median(v):.3f}")
        ax.legend(title=f"n = {v.size}", fontsize=8, title_fontsize=8)
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("number of images")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return _finish(fig, out_path)


# ---------------------------------------------------------------- command line (liverseg-figures)


def _run_rows(run_dir: Path) -> dict[str, dict[str, str]]:
    """``{input stem: row}`` of the ok rows of an inference run's per_image.csv."""
    import csv

    path = run_dir / "per_image.csv"
    if not path.is_file():
        raise ValueError(f"{run_dir}: no per_image.csv (not an inference run folder?)")
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if (r.get("status") or "ok").strip() == "ok"]
    return {Path(r.get("input", "")).stem: r for r in rows if r.get("input")}


def _run_path(value: str, run_dir: Path) -> Path | None:
    if not value:
        return None
    p = Path(value)
    for c in ([p] if p.is_absolute() else [run_dir / p, Path.cwd() / p]):
        if c.is_file():
            return c
    return None


def panel_from_runs(run_dirs: Sequence[PathLike], out_path: PathLike, *, stems: Sequence[str] | None = None,
                    names: Sequence[str] | None = None, n_auto: int = 3) -> Path:
    """The study's side-by-side panel from inference run folders of several models.

    Every run must hold the chosen images (by input stem). The image and its truth
    come from the first run's row (``input``, ``label``); each run adds one column of
    its prediction (``masks/<stem>_pred.png``). Without ``stems``: the ``n_auto``
    images with the lowest mean Dice over the runs (or the first ones, without labels).
    """
    from liverseg.data import read_image, read_mask

    runs = [Path(r) for r in run_dirs]
    if not runs:
        raise ValueError("panel_from_runs needs at least one run folder")
    names = [str(n) for n in names] if names else [r.resolve().name for r in runs]
    if len(names) != len(runs):
        raise ValueError(f"{len(runs)} run folders but {len(names)} names")
    if len(set(names)) != len(names):
        names = [f"{n} ({i + 1})" for i, n in enumerate(names)]
    tables = [_run_rows(r) for r in runs]
    common = [s for s in tables[0] if all(s in t for t in tables[1:])]
    if stems:
        for s in stems:
            for r, t in zip(runs, tables):
                if s not in t:
                    some = ", ".join(sorted(t)[:5])
                    raise ValueError(f"{r}: no processed input named {s!r} in per_image.csv (it has {len(t)}: "
                                     f"{some}{', ...' if len(t) > 5 else ''})")
        chosen = list(stems)
    else:
        if not common:
            raise ValueError("the runs have no processed input in common")

        def mean_dice(s: str) -> float:
            vals = [float(t[s]["dice"]) for t in tables if (t[s].get("dice") or "").strip()]
            return float(np.mean(vals)) if vals else math.inf

        chosen = sorted(common, key=lambda s: (mean_dice(s), s))[:n_auto]
    images, truths, preds = [], [], []
    for s in chosen:
        row = tables[0][s]
        ip = _run_path(row.get("input", ""), runs[0])
        if ip is None:
            raise ValueError(f"{runs[0]}: image {row.get('input')!r} not found")
        images.append(read_image(ip))
        lp = _run_path(row.get("label", ""), runs[0])
        truths.append(read_mask(lp) if lp is not None else None)
        cols = {}
        for name, r, t in zip(names, runs, tables):
            mp = _run_path(t[s].get("output", ""), r) or _run_path(f"masks/{s}_pred.png", r)
            if mp is None:
                raise ValueError(f"{r}: prediction mask of {s!r} not found")
            cols[name] = read_mask(mp)
        preds.append(cols)
    return plot_panels(images, truths, preds, out_path, row_titles=chosen)


def _cli():
    import click

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    def cli() -> None:
        """The study's figures from your own runs: training curves and model panels."""

    @cli.command("curves")
    @click.argument("tables", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
    @click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
                  show_default=True, help="Output folder.")
    @click.option("--label", "labels", multiple=True, help="A name per table, in order (default: run folder).")
    def curves(tables: tuple[Path, ...], out_dir: Path, labels: tuple[str, ...]) -> None:
        """Training curves from epochs.csv files or training run folders (several: side by side)."""
        try:
            paths = plot_training_curves(list(tables) if len(tables) > 1 else tables[0], out_dir,
                                         labels=list(labels) or None)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="TABLES") from None
        for p in paths:
            click.echo(str(p))

    @cli.command("panel")
    @click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("panel.png"),
                  show_default=True, help="PNG to write.")
    @click.option("--image", "stems", multiple=True,
                  help="Input file stem to show (repeat). Default: the images with the lowest mean Dice.")
    @click.option("--name", "names", multiple=True, help="A model name per run folder (default: folder name).")
    @click.option("-n", "n_auto", type=click.IntRange(1, 20), default=3, show_default=True,
                  help="How many images to pick without --image.")
    def panel(runs: tuple[Path, ...], out_path: Path, stems: tuple[str, ...], names: tuple[str, ...],
              n_auto: int) -> None:
        """Image | ground truth | prediction of each model, from inference run folders (liverseg-infer)."""
        try:
            p = panel_from_runs(runs, out_path, stems=list(stems) or None, names=list(names) or None, n_auto=n_auto)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="RUNS") from None
        click.echo(str(p))

    return cli


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``liverseg-figures`` (click is imported only here)."""
    _cli()(args=list(argv) if argv is not None else None)


if __name__ == "__main__":  # pragma: no cover
    main()
