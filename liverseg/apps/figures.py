"""The study's figures, drawn from the user's own data and runs.

* :func:`plot_panel` / :func:`plot_panels` -- the side-by-side panel image | ground
  truth | prediction(s) of several models (the study's Figures 10-16), coloured by
  :func:`liverseg.core.overlay.overlay_rgb` (true positive white, false positive
  blue, false negative red; re-exported here with :func:`save_overlay`).
* :func:`plot_training_curves` (from :mod:`liverseg.trainer.curves`) -- mPA/mIoU and
  train/validation loss per epoch from the trainer's ``epochs.csv`` (Figures 6-9).
* :func:`plot_liver_histogram`, :func:`plot_split_bars`,
  :func:`plot_intensity_histograms` -- data summaries (Figures 1-5); the plain
  :func:`liverseg.core.charts.plot_histogram` is re-exported.
* :func:`panel_from_runs` and the ``liverseg-figures`` command (:func:`main`:
  ``curves``, ``panel``) -- the same figures from training and inference run folders.

matplotlib is imported inside the plotting functions only, on the pyplot-free Agg
figures of :mod:`liverseg.core.charts`. Every plotting function takes ``out_path``:
a path writes the PNG there and returns the path; ``None`` returns the PNG bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from liverseg.core.charts import figure, finish, plot_histogram
from liverseg.core.cli import group
from liverseg.core.errors import DataError, LiversegError, UsageError
from liverseg.core.overlay import FN_COLOR, FP_COLOR, OUTLINE_COLOR, TP_COLOR, overlay_rgb, save_overlay
from liverseg.trainer.curves import plot_training_curves

PathLike = str | os.PathLike[str]
__all__ = [
    "overlay_rgb",
    "save_overlay",
    "plot_histogram",
    "plot_panel",
    "plot_panels",
    "plot_training_curves",
    "plot_liver_histogram",
    "plot_split_bars",
    "plot_intensity_histograms",
    "panel_from_runs",
    "written",
    "main",
]


# ---------------------------------------------------------------- panels (Figures 10-16)


def _rgb01(color: tuple[int, int, int]) -> tuple[float, float, float]:
    """An 8-bit RGB colour as matplotlib's 0..1 floats."""
    return color[0] / 255, color[1] / 255, color[2] / 255


def _legend_handles(with_truth: bool) -> list[Any]:
    from matplotlib.patches import Patch

    if not with_truth:
        return [Patch(facecolor=_rgb01(OUTLINE_COLOR), edgecolor="black", label="predicted outline")]
    return [
        Patch(facecolor=_rgb01(c), edgecolor="black", label=n)
        for c, n in ((TP_COLOR, "true positive"), (FP_COLOR, "false positive"), (FN_COLOR, "false negative"))
    ]


def _model_names(
    images: Sequence[np.ndarray], truths: Sequence[np.ndarray | None], preds: Sequence[Mapping[str, np.ndarray]]
) -> list[str]:
    """The models every row names, in order; :class:`UsageError` when the rows do not fit together."""
    n = len(images)
    if n == 0:
        raise UsageError("plot_panels needs at least one image")
    if len(truths) != n or len(preds) != n:
        raise UsageError(f"{n} images but {len(truths)} truths and {len(preds)} prediction sets")
    names = list(preds[0].keys())
    for i, p in enumerate(preds):
        if list(p.keys()) != names:
            raise UsageError(f"row {i} names models {list(p.keys())}, row 0 names {names}")
    return names


def _draw_panel_row(
    axes: Sequence[Any],
    img: np.ndarray,
    truth: np.ndarray | None,
    preds: Mapping[str, np.ndarray],
    *,
    first: bool,
    truth_column: bool,
    row_title: str | None,
) -> None:
    """One row: the image, the truth (when any row has one), then each model's overlay with its scores."""
    from liverseg.core.metrics import image_scores

    ax = axes[0]
    ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_title("image" if first else "", fontsize=10)
    if row_title is not None:
        ax.set_ylabel(row_title, fontsize=9)
    cols = iter(axes[1:])
    if truth_column:
        ax = next(cols)
        if truth is not None:
            ax.imshow(np.asarray(truth, dtype=bool), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.set_title("ground truth" if first else "", fontsize=10)
    for (name, pred), ax in zip(preds.items(), cols):
        mask = np.asarray(pred, dtype=bool)
        ax.imshow(overlay_rgb(img, mask, truth), interpolation="nearest")
        label = str(name)
        if truth is not None:
            sc = image_scores(mask, truth)
            label += f"\nDice {sc['dice']:.3f}  mIoU {sc['mIoU']:.3f}"
        ax.set_title(label, fontsize=9)


def plot_panels(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray | None],
    preds: Sequence[Mapping[str, np.ndarray]],
    out_path: PathLike | None,
    *,
    row_titles: Sequence[str] | None = None,
    title: str | None = None,
    cell_inches: float = 2.6,
) -> Path | bytes:
    """Rows of image | ground truth | one overlay per model (the study's Figures 10-16).

    ``preds[i]`` maps a model name to its bool mask for ``images[i]``; every row
    must name the same models (else :class:`~liverseg.core.errors.UsageError`, a
    ``ValueError``). A row whose truth is None shows the outline of each prediction
    instead of the study's colouring and no truth column cell.
    """
    names = _model_names(images, truths, preds)
    n = len(images)
    any_truth = any(t is not None for t in truths)
    ncols = 1 + int(any_truth) + len(names)
    fig = figure(cell_inches * ncols, cell_inches * n + 0.9)
    axes = fig.subplots(n, ncols, squeeze=False)
    for i in range(n):
        row_title = str(row_titles[i]) if row_titles is not None else None
        _draw_panel_row(
            axes[i],
            np.asarray(images[i]),
            truths[i],
            preds[i],
            first=i == 0,
            truth_column=any_truth,
            row_title=row_title,
        )
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    fig.legend(handles=_legend_handles(any_truth), loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return finish(fig, out_path)


def plot_panel(
    image: np.ndarray,
    truth: np.ndarray | None,
    preds: Mapping[str, np.ndarray],
    out_path: PathLike | None,
    *,
    title: str | None = None,
) -> Path | bytes:
    """One row: image | ground truth | each model's overlay (see :func:`plot_panels`)."""
    return plot_panels([image], [truth], [preds], out_path, title=title)


# ---------------------------------------------------------------- data summaries (Figures 1-5)


STUDY_CATEGORIES = ["<1%", *(f"{k}-{k + 1}%" for k in range(1, 19)), ">19%"]


def study_categories(percent: Sequence[float]) -> list[int]:
    """Counts in the study's 1%-wide categories: <1%, 1-2%, ..., 18-19%, >19% (k <= v < k+1; >= 19 is >19%)."""
    counts = [0] * len(STUDY_CATEGORIES)
    for v in percent:
        if v is not None and math.isfinite(v):
            counts[0 if v < 1 else min(int(v), len(STUDY_CATEGORIES) - 1)] += 1
    return counts


def plot_liver_histogram(
    percent: Sequence[float],
    out_path: PathLike | None,
    *,
    title: str = "",
    bins: int = 20,
    color: str = "C0",
    max_percent: float | None = None,
    categories: bool = False,
) -> Path | bytes:
    """Histogram of the liver-pixel percentage per mask (the study's Figures 1-4).

    ``max_percent`` fixes the x range (0..max_percent), so that the histograms of
    several splits share their bins and compare at a glance. ``categories``: the
    study's own 1%-wide categories (:data:`STUDY_CATEGORIES`) as bars instead.
    """
    v = np.asarray([x for x in percent if x is not None and math.isfinite(x)], dtype=np.float64)
    fig = figure(5.6, 3.9)
    ax = fig.subplots()
    if v.size and categories:
        ax.bar(range(len(STUDY_CATEGORIES)), study_categories(v.tolist()), color=color, edgecolor="white")
        ax.set_xticks(range(len(STUDY_CATEGORIES)), STUDY_CATEGORIES, rotation=60, fontsize=7)
        ax.text(0.98, 0.95, f"n = {v.size}", ha="right", va="top", fontsize=8, transform=ax.transAxes)
    elif v.size:
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
    return finish(fig, out_path)


def plot_split_bars(
    names: Sequence[str],
    means: Sequence[float],
    stds: Sequence[float],
    out_path: PathLike | None,
    *,
    ylabel: str = "liver pixels (% of the image)",
    title: str = "Mean and standard deviation per split",
    colors: Sequence[str] | None = None,
) -> Path | bytes:
    """Bar chart of mean with a standard-deviation error bar per split (Figure 5)."""
    fig = figure(min(11.0, max(4.0, 1.2 * len(names) + 1.5)), 3.9)
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
    return finish(fig, out_path)


def plot_intensity_histograms(
    hists: Mapping[str, np.ndarray], out_path: PathLike | None, *, title: str = "Pixel intensity per split"
) -> Path | bytes:
    """Normalised 256-bin gray-level histograms, one line per split (log scale)."""
    fig = figure(5.6, 3.9)
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
    return finish(fig, out_path)


# ---------------------------------------------------------------- command line (liverseg-figures)
#
# ``liverseg-figures curves`` / ``panel``: a group under the exit-code table of
# liverseg.core.cli; a bad run folder or table is one ``error:`` line and exit 2.


def written(result: Path | bytes) -> Path:
    """The path a plotting function returns when it was given one (narrows ``Path | bytes``)."""
    if not isinstance(result, Path):
        raise TypeError("expected the path of the written PNG, got its bytes")
    return result


def _run_rows(run_dir: Path) -> dict[str, dict[str, str]]:
    """``{input stem: row}`` of the ok rows of an inference run's per_image.csv."""
    import csv

    path = run_dir / "per_image.csv"
    if not path.is_file():
        raise DataError(f"{run_dir}: no per_image.csv (not an inference run folder?)")
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if (r.get("status") or "ok").strip() == "ok"]
    return {Path(r.get("input", "")).stem: r for r in rows if r.get("input")}


def _run_path(value: str, run_dir: Path) -> Path | None:
    if not value:
        return None
    p = Path(value)
    for c in [p] if p.is_absolute() else [run_dir / p, Path.cwd() / p]:
        if c.is_file():
            return c
    return None


def _column_names(runs: list[Path], names: Sequence[str] | None) -> list[str]:
    """A model name per run (default: the folder name); repeated names get their run's number."""
    out = [str(n) for n in names] if names else [r.resolve().name for r in runs]
    if len(out) != len(runs):
        raise UsageError(f"{len(runs)} run folders but {len(out)} names")
    if len(set(out)) != len(out):
        out = [f"{n} ({i + 1})" for i, n in enumerate(out)]
    return out


def _choose_stems(
    runs: list[Path], tables: list[dict[str, dict[str, str]]], stems: Sequence[str] | None, n_auto: int
) -> list[str]:
    """``stems`` when every run has them; else the ``n_auto`` common inputs of lowest mean Dice."""
    if stems:
        for s in stems:
            for r, t in zip(runs, tables):
                if s not in t:
                    some = ", ".join(sorted(t)[:5])
                    raise DataError(
                        f"{r}: no processed input named {s!r} in per_image.csv (it has {len(t)}: "
                        f"{some}{', ...' if len(t) > 5 else ''})"
                    )
        return list(stems)
    common = [s for s in tables[0] if all(s in t for t in tables[1:])]
    if not common:
        raise DataError("the runs have no processed input in common")

    def mean_dice(stem: str) -> float:
        vals = [float(t[stem]["dice"]) for t in tables if (t[stem].get("dice") or "").strip()]
        return float(np.mean(vals)) if vals else math.inf

    return sorted(common, key=lambda stem: (mean_dice(stem), stem))[:n_auto]


def _panel_row(
    stem: str, runs: list[Path], tables: list[dict[str, dict[str, str]]], names: list[str]
) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """The image and truth of ``stem`` (from the first run's row) and each run's prediction."""
    from liverseg.core.images import read_image, read_mask

    row = tables[0][stem]
    ip = _run_path(row.get("input", ""), runs[0])
    if ip is None:
        raise DataError(f"{runs[0]}: image {row.get('input')!r} not found")
    lp = _run_path(row.get("label", ""), runs[0])
    preds = {}
    for name, r, t in zip(names, runs, tables):
        mp = _run_path(t[stem].get("output", ""), r) or _run_path(f"masks/{stem}_pred.png", r)
        if mp is None:
            raise DataError(f"{r}: prediction mask of {stem!r} not found")
        preds[name] = read_mask(mp)
    return read_image(ip), read_mask(lp) if lp is not None else None, preds


def panel_from_runs(
    run_dirs: Sequence[PathLike],
    out_path: PathLike,
    *,
    stems: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    n_auto: int = 3,
) -> Path:
    """The study's side-by-side panel from inference run folders of several models.

    Every run must hold the chosen images (by input stem). The image and its truth
    come from the first run's row (``input``, ``label``); each run adds one column of
    its prediction (the row's ``output``, else ``masks/<stem>_pred.png``). Without
    ``stems``: the ``n_auto`` images with the lowest mean Dice over the runs (inputs
    without a Dice sort last, by name). A run folder or file that does not fit raises
    :class:`~liverseg.core.errors.DataError`, bad arguments
    :class:`~liverseg.core.errors.UsageError` (both ``ValueError``).
    """
    runs = [Path(r) for r in run_dirs]
    if not runs:
        raise UsageError("panel_from_runs needs at least one run folder")
    columns = _column_names(runs, names)
    tables = [_run_rows(r) for r in runs]
    chosen = _choose_stems(runs, tables, stems, n_auto)
    rows = [_panel_row(s, runs, tables, columns) for s in chosen]
    images, truths, preds = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    return written(plot_panels(images, truths, preds, out_path, row_titles=chosen))


@group()
def main() -> None:
    """The study's figures from your own runs: training curves and model panels."""


@main.command("curves")
@click.argument("tables", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Output folder.",
)
@click.option("--label", "labels", multiple=True, help="A name per table, in order (default: run folder).")
def curves(tables: tuple[Path, ...], out_dir: Path, labels: tuple[str, ...]) -> None:
    """Training curves from epochs.csv files, run folders or the study's metric_values.csv (several: side by side)."""
    try:
        paths = plot_training_curves(
            list(tables) if len(tables) > 1 else tables[0], out_dir, labels=list(labels) or None
        )
    except ValueError as e:  # liverseg.trainer.curves reports a bad or missing table as a plain ValueError
        if isinstance(e, LiversegError):
            raise
        raise DataError(str(e)) from None
    for p in paths:
        click.echo(str(p))


@main.command("panel")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("panel.png"),
    show_default=True,
    help="PNG to write.",
)
@click.option(
    "--image",
    "stems",
    multiple=True,
    help="Input file stem to show (repeat). Default: the images with the lowest mean Dice.",
)
@click.option("--name", "names", multiple=True, help="A model name per run folder (default: folder name).")
@click.option(
    "-n",
    "n_auto",
    type=click.IntRange(1, 20),
    default=3,
    show_default=True,
    help="How many images to pick without --image.",
)
def panel(runs: tuple[Path, ...], out_path: Path, stems: tuple[str, ...], names: tuple[str, ...], n_auto: int) -> None:
    """Image | ground truth | prediction of each model, from inference run folders (liverseg-infer)."""
    p = panel_from_runs(runs, out_path, stems=list(stems) or None, names=list(names) or None, n_auto=n_auto)
    click.echo(str(p))


def _cli() -> click.Group:
    """The ``liverseg-figures`` group (:func:`main` itself; callers used to build it with this)."""
    return main


if __name__ == "__main__":  # pragma: no cover
    main()
