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

matplotlib is imported inside the plotting functions only, on the pyplot-free Agg
figures of :mod:`liverseg.core.charts`. Every plotting function takes ``out_path``:
a path writes the PNG there and returns the path; ``None`` returns the PNG bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from liverseg.core.charts import figure, finish, plot_histogram
from liverseg.core.cli import group
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
]


# ---------------------------------------------------------------- panels (Figures 10-16)


def _legend_handles(with_truth: bool):
    from matplotlib.patches import Patch

    if not with_truth:
        return [Patch(facecolor=np.array(OUTLINE_COLOR) / 255, edgecolor="black", label="predicted outline")]
    return [
        Patch(facecolor=np.array(c) / 255, edgecolor="black", label=n)
        for c, n in ((TP_COLOR, "true positive"), (FP_COLOR, "false positive"), (FN_COLOR, "false negative"))
    ]


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
    must name the same models. A row whose truth is None shows the outline of each
    prediction instead of the study's colouring and no truth column cell.
    """
    from liverseg.core.metrics import image_scores

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
    fig = figure(cell_inches * ncols, cell_inches * n + 0.9)
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


def plot_liver_histogram(
    percent: Sequence[float],
    out_path: PathLike | None,
    *,
    title: str = "",
    bins: int = 20,
    color: str = "C0",
    max_percent: float | None = None,
) -> Path | bytes:
    """Histogram of the liver-pixel percentage per mask (the study's Figures 1-4).

    ``max_percent`` fixes the x range (0..max_percent), so that the histograms of
    several splits share their bins and compare at a glance.
    """
    v = np.asarray([x for x in percent if x is not None and math.isfinite(x)], dtype=np.float64)
    fig = figure(5.6, 3.9)
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
    for c in [p] if p.is_absolute() else [run_dir / p, Path.cwd() / p]:
        if c.is_file():
            return c
    return None


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
    its prediction (``masks/<stem>_pred.png``). Without ``stems``: the ``n_auto``
    images with the lowest mean Dice over the runs (or the first ones, without labels).
    """
    from liverseg.core.data import read_image, read_mask

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
                    raise ValueError(
                        f"{r}: no processed input named {s!r} in per_image.csv (it has {len(t)}: "
                        f"{some}{', ...' if len(t) > 5 else ''})"
                    )
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

    @group()
    def cli() -> None:
        """The study's figures from your own runs: training curves and model panels."""

    @cli.command("curves")
    @click.argument("tables", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
    @click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("."),
        show_default=True,
        help="Output folder.",
    )
    @click.option("--label", "labels", multiple=True, help="A name per table, in order (default: run folder).")
    def curves(tables: tuple[Path, ...], out_dir: Path, labels: tuple[str, ...]) -> None:
        """Training curves from epochs.csv files or training run folders (several: side by side)."""
        try:
            paths = plot_training_curves(
                list(tables) if len(tables) > 1 else tables[0], out_dir, labels=list(labels) or None
            )
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="TABLES") from None
        for p in paths:
            click.echo(str(p))

    @cli.command("panel")
    @click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option(
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
    def panel(
        runs: tuple[Path, ...], out_path: Path, stems: tuple[str, ...], names: tuple[str, ...], n_auto: int
    ) -> None:
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
