"""``liverseg-eda``: what is in the data, before any training.

For each split given (a study CSV list, a pairs CSV or a folder; see
:func:`liverseg.core.data.discover`) and for all of them together it counts the pairs,
image sizes, gray-level ranges and empty masks, and measures the liver-pixel
percentage of every mask. It writes, into one folder:

* ``liver_hist_<split>.png`` and ``liver_hist_all.png`` -- histograms of the
  liver-pixel percentage per mask (the study's Figures 1-4), on a shared x range;
* ``liver_mean_std.png`` -- mean and standard deviation per split (Figure 5);
* ``intensity.png`` -- the gray-level distribution per split;
* ``eda.json`` (all the numbers), ``eda_images.csv`` (one row per pair),
  ``eda.md`` and a self-contained ``eda.html``.

Standard deviations are population ones (numpy ``ddof=0``). A pair that cannot be
read is listed with its reason and the rest go on; the exit code is then 1.
Identical images (same pixels) that appear in more than one split are reported:
they would leak training data into the test numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import numpy as np

from liverseg.core.cli import command
from liverseg.core.data import DataError, Sample, discover, read_pair

ALL = "all"
MAX_LISTED_ERRORS = 200  # in eda.md / eda.html; all are in eda.json


def split_name(source: Path) -> str:
    """``train_x.csv`` -> ``train``, ``val_pairs.csv`` -> ``val``, ``data/test/`` -> ``test``."""
    source = Path(source)
    if source.is_dir() or not source.suffix:
        name = source.resolve().name if source.exists() else source.name
    else:
        name = re.sub(r"([_-](x|X|pairs|list|images))$", "", source.stem)
    return name or "data"


@dataclass
class ImageStats:
    """Numbers of one image/mask pair."""

    split: str
    image: str
    mask: str
    height: int
    width: int
    liver_pixels: int
    liver_percent: float
    gray_min: int
    gray_max: int
    gray_mean: float
    liver_gray_mean: float | None
    digest: str


@dataclass
class EdaResult:
    """What :func:`run_eda` measured and wrote."""

    out_dir: Path
    splits: dict[str, dict[str, Any]]
    images: list[ImageStats]
    errors: list[dict[str, str]]
    overlap: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)


def _measure(split: str, sample: Sample) -> tuple[ImageStats, np.ndarray]:
    img, mask = read_pair(sample)
    liver = int(np.count_nonzero(mask))
    digest = hashlib.sha1(np.ascontiguousarray(img).tobytes() + str(img.shape).encode()).hexdigest()
    stats = ImageStats(
        split=split,
        image=str(sample.image),
        mask=str(sample.mask),
        height=int(img.shape[0]),
        width=int(img.shape[1]),
        liver_pixels=liver,
        liver_percent=100.0 * liver / img.size,
        gray_min=int(img.min()),
        gray_max=int(img.max()),
        gray_mean=float(img.mean()),
        liver_gray_mean=float(img[mask].mean()) if liver else None,
        digest=digest,
    )
    return stats, np.bincount(img.ravel(), minlength=256).astype(np.int64)


def _percentile_from_hist(hist: np.ndarray, q: float) -> int | None:
    total = int(hist.sum())
    if total == 0:
        return None
    return int(np.searchsorted(np.cumsum(hist), q / 100.0 * total, side="left"))


def _summarise(stats: list[ImageStats], hist: np.ndarray, n_listed: int, n_errors: int) -> dict[str, Any]:
    pct = np.array([s.liver_percent for s in stats], dtype=np.float64)
    liver_gray = [s.liver_gray_mean for s in stats if s.liver_gray_mean is not None]
    sizes = Counter(f"{s.width}x{s.height}" for s in stats)
    total = int(hist.sum())
    return {
        "n_listed": n_listed,
        "n_read": len(stats),
        "n_unreadable": n_errors,
        "n_empty_masks": int(np.count_nonzero(pct == 0)) if pct.size else 0,
        "image_sizes": dict(sorted(sizes.items(), key=lambda kv: -kv[1])),
        "liver_percent": {
            "mean": float(pct.mean()) if pct.size else None,
            "std": float(pct.std(ddof=0)) if pct.size else None,
            "min": float(pct.min()) if pct.size else None,
            "median": float(np.median(pct)) if pct.size else None,
            "max": float(pct.max()) if pct.size else None,
        },
        "gray": {
            "min": int(np.flatnonzero(hist)[0]) if total else None,
            "max": int(np.flatnonzero(hist)[-1]) if total else None,
            "mean": float((hist * np.arange(256)).sum() / total) if total else None,
            "p1": _percentile_from_hist(hist, 1),
            "p99": _percentile_from_hist(hist, 99),
            "liver_mean": float(np.mean(liver_gray)) if liver_gray else None,
        },
        "gray_histogram": hist.tolist(),
    }


def run_eda(
    sources: list[Path],
    out_dir: Path,
    *,
    names: list[str] | None = None,
    root: Path | None = None,
    bins: int = 20,
    progress: bool = False,
) -> EdaResult:
    """Measure every split, write the figures and summaries into ``out_dir``.

    Raises :class:`liverseg.core.data.DataError` when a source cannot be listed at all
    (bad CSV, folder without masks); unreadable pairs are collected instead.
    """
    from tqdm import tqdm

    from liverseg.apps import figures

    if not sources:
        raise ValueError("run_eda needs at least one data source")
    if names is not None and len(names) != len(sources):
        raise ValueError(f"{len(sources)} data sources but {len(names)} names")
    raw_names = names or [split_name(s) for s in sources]
    split_names: list[str] = []
    for n in raw_names:
        base, k, n2 = n, 2, n
        while n2 in split_names or n2 == ALL:
            n2, k = f"{base}-{k}", k + 1
        split_names.append(n2)
    listed = {name: discover(src, root=root, need_labels=True) for name, src in zip(split_names, sources)}

    images: list[ImageStats] = []
    errors: list[dict[str, str]] = []
    hists: dict[str, np.ndarray] = {}
    per_split: dict[str, list[ImageStats]] = {}
    n_err: dict[str, int] = {}
    for name, samples in listed.items():
        hists[name] = np.zeros(256, dtype=np.int64)
        per_split[name] = []
        n_err[name] = 0
        for s in tqdm(samples, desc=f"eda {name}", unit="img", disable=not progress, file=sys.stderr):
            try:
                st, h = _measure(name, s)
            except DataError as e:
                errors.append({"split": name, "image": str(s.image), "error": str(e)})
                n_err[name] += 1
                continue
            per_split[name].append(st)
            hists[name] += h
            images.append(st)

    splits = {name: _summarise(per_split[name], hists[name], len(listed[name]), n_err[name]) for name in listed}
    multi = len(listed) > 1
    if multi:
        hists[ALL] = np.sum([hists[n] for n in listed], axis=0)
        splits[ALL] = _summarise(images, hists[ALL], sum(len(v) for v in listed.values()), len(errors))

    by_digest: dict[str, set[str]] = {}
    for st in images:
        by_digest.setdefault(st.digest, set()).add(st.split)
    overlap = []
    for st in images:
        if len(by_digest.get(st.digest, ())) > 1:
            overlap.append({"split": st.split, "image": st.image, "also_in": sorted(by_digest[st.digest] - {st.split})})

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    top = max((s.liver_percent for s in images), default=0.0)
    top = max(top, 1e-6)
    for i, name in enumerate(list(listed) + ([ALL] if multi else [])):
        pct = [s.liver_percent for s in (images if name == ALL else per_split[name])]
        files.append(
            figures.plot_liver_histogram(
                pct,
                out_dir / f"liver_hist_{_file_part(name)}.png",
                bins=bins,
                max_percent=top,
                color="0.35" if name == ALL else f"C{i % 10}",
                title=f"Liver-pixel percentage per mask: {name}",
            )
        )
    bar_names = list(splits)
    files.append(
        figures.plot_split_bars(
            bar_names,
            [splits[n]["liver_percent"]["mean"] or 0.0 for n in bar_names],
            [splits[n]["liver_percent"]["std"] or 0.0 for n in bar_names],
            out_dir / "liver_mean_std.png",
            colors=["0.35" if n == ALL else f"C{i % 10}" for i, n in enumerate(bar_names)],
            title="Liver pixels per mask: mean and standard deviation per split",
        )
    )
    files.append(figures.plot_intensity_histograms({n: hists[n] for n in listed}, out_dir / "intensity.png"))

    result = EdaResult(out_dir=out_dir, splits=splits, images=images, errors=errors, overlap=overlap, files=files)
    sources_info = [{"split": n, "source": str(s), "pairs": len(listed[n])} for n, s in zip(split_names, sources)]
    files.append(_write_json(result, sources_info))
    files.append(_write_images_csv(result))
    files += _write_docs(result, sources_info)
    return result


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "split"


# ---------------------------------------------------------------- outputs


def _write_json(r: EdaResult, sources: list[dict[str, Any]]) -> Path:
    from liverseg import __version__

    data = {
        "liverseg": __version__,
        "written": datetime.now().astimezone().isoformat(timespec="seconds"),
        "sources": sources,
        "std": "population standard deviation (ddof=0)",
        "splits": r.splits,
        "unreadable": r.errors,
        "identical_images_across_splits": r.overlap,
    }
    path = r.out_dir / "eda.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def _write_images_csv(r: EdaResult) -> Path:
    import pandas as pd

    cols = [
        "split",
        "image",
        "mask",
        "height",
        "width",
        "liver_pixels",
        "liver_percent",
        "gray_min",
        "gray_max",
        "gray_mean",
        "liver_gray_mean",
    ]
    df = pd.DataFrame([{c: getattr(s, c) for c in cols} for s in r.images], columns=cols)
    path = r.out_dir / "eda_images.csv"
    df.to_csv(path, index=False)
    return path


def _f(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _tables(r: EdaResult, sources: list[dict[str, Any]]) -> list[tuple[str, list[str], list[list[str]], list[bool]]]:
    s = r.splits
    counts = [
        [
            n,
            _f(v["n_listed"]),
            _f(v["n_read"]),
            _f(v["n_unreadable"]),
            _f(v["n_empty_masks"]),
            ", ".join(f"{k} ({c})" for k, c in v["image_sizes"].items()) or "—",
        ]
        for n, v in s.items()
    ]
    liver = [
        [n] + [_f(v["liver_percent"][k], 3 if k == "min" else 2) for k in ("mean", "std", "min", "median", "max")]
        for n, v in s.items()
    ]
    gray = [
        [n] + [_f(v["gray"][k], 1) for k in ("min", "max", "mean", "p1", "p99", "liver_mean")] for n, v in s.items()
    ]
    return [
        (
            "Sources",
            ["split", "source", "pairs listed"],
            [[d["split"], d["source"], str(d["pairs"])] for d in sources],
            [False, False, True],
        ),
        (
            "Counts",
            ["split", "listed", "read", "unreadable", "empty masks", "image sizes (W x H, count)"],
            counts,
            [False, True, True, True, True, False],
        ),
        (
            "Liver pixels per mask (% of the image)",
            ["split", "mean", "std", "min", "median", "max"],
            liver,
            [False] + [True] * 5,
        ),
        (
            "Gray levels",
            ["split", "min", "max", "mean", "1st percentile", "99th percentile", "mean inside the liver"],
            gray,
            [False] + [True] * 6,
        ),
    ]


def _figure_list(r: EdaResult) -> list[tuple[Path, str]]:
    out = []
    for p in r.files:
        if p.suffix != ".png":
            continue
        if p.name.startswith("liver_hist_"):
            cap = f"Liver-pixel percentage per mask: {p.stem[len('liver_hist_') :]}"
        elif p.name == "liver_mean_std.png":
            cap = "Mean and standard deviation of the liver-pixel percentage per split"
        else:
            cap = "Gray-level distribution per split (fraction of pixels, log scale)"
        out.append((p, cap))
    return out


def _problems(r: EdaResult) -> list[str]:
    out = []
    if r.overlap:
        n = len({o["image"] for o in r.overlap})
        out.append(
            f"{n} image(s) have identical pixels to an image in another split (data leak between splits); "
            "see identical_images_across_splits in eda.json."
        )
    empty = sum(v["n_empty_masks"] for k, v in r.splits.items() if k != ALL)
    if empty:
        out.append(f"{empty} mask(s) contain no liver.")
    return out


def _write_docs(r: EdaResult, sources: list[dict[str, Any]]) -> list[Path]:
    from liverseg.infer.report import esc, html_page, html_table, img_tag, write_text_atomic

    tables = _tables(r, sources)
    figs = _figure_list(r)
    problems = _problems(r)
    errs = r.errors[:MAX_LISTED_ERRORS]
    more = len(r.errors) - len(errs)

    md = ["# Data summary (liverseg-eda)", ""]
    for p in problems:
        md += [f"> **Note:** {p}", ""]
    for title, header, rows, _ in tables:
        md += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        md.append("")
    md += ["Standard deviations are population ones (ddof=0).", "", "## Figures", ""]
    md += [f"![{cap}]({p.name})\n\n*{cap}*\n" for p, cap in figs]
    if r.errors:
        md += ["## Unreadable pairs", ""] + [f"- `{e['image']}` ({e['split']}): {e['error']}" for e in errs]
        if more:
            md.append(f"- ... and {more} more (all in eda.json)")
        md.append("")
    md_path = write_text_atomic(r.out_dir / "eda.md", "\n".join(md))

    body = ["<h1>Data summary</h1>", '<p class="sub">liverseg-eda: liver masks and images per split</p>']
    body += [f'<p class="warn">{esc(p)}</p>' for p in problems]
    for title, header, rows, numeric in tables:
        body.append(f"<h2>{esc(title)}</h2>" + html_table(header, rows, numeric=numeric))
    body.append('<p class="note">Standard deviations are population ones (ddof=0).</p><h2>Figures</h2>')
    body.append('<div class="cases">')
    for p, cap in figs:
        body.append(f"<figure>{img_tag(p.read_bytes(), cap)}<figcaption>{esc(cap)}</figcaption></figure>")
    body.append("</div>")
    if r.errors:
        body.append("<h2>Unreadable pairs</h2>")
        body.append(
            html_table(
                ["split", "image", "reason"],
                [[e["split"], e["image"], e["error"]] for e in errs],
                row_classes=["failed"] * len(errs),
            )
        )
        if more:
            body.append(f'<p class="note">... and {more} more (all in eda.json)</p>')
    html_path = write_text_atomic(r.out_dir / "eda.html", html_page("liverseg data summary", "\n".join(body)))
    return [md_path, html_path]


# ---------------------------------------------------------------- CLI


def _default_out() -> Path:
    return Path("runs") / f"eda-{datetime.now():%Y%m%d-%H%M%S}"


@command()
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder.  [default: runs/eda-<YYYYmmdd-HHMMSS>]",
)
@click.option(
    "--name", "names", multiple=True, help="Name of each DATA split, in order (default: from the file or folder name)."
)
@click.option(
    "--data-root",
    "root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder that relative CSV paths are resolved against (default: the current folder, then the CSV's folder).",
)
@click.option("--bins", type=click.IntRange(2, 500), default=20, show_default=True, help="Histogram bins.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
def main(
    data: tuple[Path, ...],
    out_dir: Path | None,
    names: tuple[str, ...],
    root: Path | None,
    bins: int,
    progress: bool | None,
) -> None:
    """Figures and numbers of the liver masks in DATA (CSV lists, pairs CSVs or folders; one per split).

    Writes liver-pixel histograms per split and all together, the mean and standard
    deviation per split, gray-level distributions, eda.json, eda_images.csv, eda.md
    and a self-contained eda.html. Exit code 0: all pairs read; 1: some could not be
    read (listed with their reason); 2: bad arguments or an unlistable DATA.
    """
    if names and len(names) != len(data):
        raise click.BadParameter(f"{len(names)} --name values for {len(data)} DATA arguments", param_hint="--name")
    out = out_dir or _default_out()
    try:
        result = run_eda(
            list(data),
            out,
            names=list(names) or None,
            root=root,
            bins=bins,
            progress=sys.stderr.isatty() if progress is None else progress,
        )
    except DataError as e:
        raise click.BadParameter(str(e), param_hint="DATA") from None
    for name, s in result.splits.items():
        lp = s["liver_percent"]
        click.echo(
            f"{name:>10}: {s['n_read']}/{s['n_listed']} pairs, {s['n_empty_masks']} empty masks, "
            f"liver {_f(lp['mean'])} ± {_f(lp['std'])} % of the image"
        )
    for p in _problems(result):
        click.echo(f"note: {p}")
    for e in result.errors:
        click.echo(f"unreadable: {e['image']}: {e['error']}", err=True)
    click.echo(f"wrote {os.fspath(result.out_dir / 'eda.html')}")
    sys.exit(1 if result.errors else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
