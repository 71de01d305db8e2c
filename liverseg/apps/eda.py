"""``liverseg-eda``: what is in the data, before any training.

For each split given (a study CSV list, a pairs CSV or a folder; see
:func:`liverseg.core.images.discover`) and for all of them together it counts the pairs,
image sizes, gray-level ranges and empty masks, and measures the liver-pixel
percentage of every mask. It writes, into one folder:

* ``liver_hist_<split>.png`` and ``liver_hist_all.png`` -- histograms of the
  liver-pixel percentage per mask (the study's Figures 1-4), on a shared x range;
* ``liver_mean_std.png`` -- mean and standard deviation per split (Figure 5);
* ``intensity.png`` -- the gray-level distribution per split;
* ``samples_<split>.png`` -- a few images of each split (spread over its list, masks with
  liver) with the mask's outline, so what the data looks like is seen, not only counted;
* ``eda.json`` (all the numbers), ``eda_images.csv`` (one row per pair),
  ``eda.md`` and a self-contained ``eda.html``.

Standard deviations are population ones (numpy ``ddof=0``). A pair that cannot be
read is listed with its reason and the rest go on; the exit code is then 1. A source
that cannot be listed at all (no such file, an empty list, a folder without masks) is
one ``error:`` line and exit code 2, before anything is written.
Identical images (same pixels) that appear in more than one split are reported:
they would leak training data into the test numbers.

Orientation: a set stored upside down or mirrored relative to the others (the study's
reference set is stored upside down) is flagged by :func:`check_orientation`: each
split's images and masks, scaled to ``ATLAS`` pixels square and averaged, say where its
spine and table lie (top or bottom) and on which side its liver lies (left or right),
and each split is compared with every other.
"""

from __future__ import annotations

import hashlib
import json
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
from liverseg.core.errors import EXIT_FAILED, EXIT_OK, DataError, UsageError
from liverseg.core.files import versions, write_text_atomic
from liverseg.core.html import esc, fmt, html_page, html_table, img_tag
from liverseg.core.images import Sample, discover, read_pair

ALL = "all"
N_SAMPLES = 6  # sample images shown per split
SAMPLE_SIDE = 160  # pixels of each sample image in samples_<split>.png
ATLAS = 32  # masks are averaged at ATLAS x ATLAS pixels for the orientation check
ORIENTATION_MARGIN = 0.2  # asymmetries correlating below -this are taken as flipped
MAX_LISTED_ERRORS = 200  # in eda.md / eda.html; all are in eda.json
Table = tuple[str, list[str], list[list[str]], list[bool]]  # title, header, rows, numeric columns


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
    orientation: dict[str, dict[str, Any]] = field(default_factory=dict)


def _small(gray: np.ndarray) -> np.ndarray:
    """A uint8 image as a float ATLAS x ATLAS map in [0, 1] (box-averaged)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(gray)).resize((ATLAS, ATLAS), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float64) / 255.0


def _measure(split: str, sample: Sample) -> tuple[ImageStats, np.ndarray, np.ndarray, np.ndarray]:
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
    small_mask, small_img = _small(mask.astype(np.uint8) * 255), _small(img)
    return stats, np.bincount(img.ravel(), minlength=256).astype(np.int64), small_mask, small_img


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


@dataclass
class _Split:
    """One split as listed and as read."""

    samples: list[Sample]
    stats: list[ImageStats] = field(default_factory=list)
    hist: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))  # gray levels of all pixels
    n_errors: int = 0
    atlas: np.ndarray = field(default_factory=lambda: np.zeros((ATLAS, ATLAS)))  # sum of the masks with liver
    image_atlas: np.ndarray = field(default_factory=lambda: np.zeros((ATLAS, ATLAS)))  # sum of all images
    with_liver: list[int] = field(default_factory=list)  # indices into samples of the pairs with liver


def _unique_names(sources: list[Path], names: list[str] | None) -> list[str]:
    """A split name per source (given or from the file name), made unique (``x``, ``x-2``, ...), never ``all``."""
    if names is not None and len(names) != len(sources):
        raise UsageError(f"{len(sources)} data sources but {len(names)} names")
    out: list[str] = []
    for n in names or [split_name(s) for s in sources]:
        base, k, n2 = n, 2, n
        while n2 in out or n2 == ALL:
            n2, k = f"{base}-{k}", k + 1
        out.append(n2)
    return out


def _read_split(name: str, split: _Split, errors: list[dict[str, str]], progress: bool) -> None:
    """Measure every pair of ``split``; an unreadable pair goes to ``errors`` with its reason."""
    from tqdm import tqdm

    for i, s in enumerate(tqdm(split.samples, desc=f"eda {name}", unit="img", disable=not progress, file=sys.stderr)):
        try:
            st, h, small, small_img = _measure(name, s)
        except DataError as e:
            errors.append({"split": name, "image": str(s.image), "error": str(e)})
            split.n_errors += 1
            continue
        split.stats.append(st)
        split.hist += h
        split.image_atlas += small_img
        if st.liver_pixels:
            split.atlas += small
            split.with_liver.append(i)


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else None


def _asymmetry_agreement(a: np.ndarray, b: np.ndarray, axis: int) -> float | None:
    """How ``a`` and ``b`` agree in which end is heavier along ``axis`` (0: top-bottom, 1: left-right).

    The maps are collapsed to their profile along ``axis`` (so a flip along the other axis
    does not matter) and the parts of the profiles that change sign when reversed are
    correlated: +1, lopsided the same way; -1, one is the other flipped.
    """
    pa, pb = a.mean(axis=1 - axis), b.mean(axis=1 - axis)
    return _correlation(pa - pa[::-1], pb - pb[::-1])


def _compare(own: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Top-bottom agreement of the image maps, left-right agreement of the liver maps, and the flip they imply."""
    vertical = _asymmetry_agreement(own[1], other[1], 0)  # spine, table and body outline: top vs bottom
    horizontal = _asymmetry_agreement(own[0], other[0], 1)  # the liver lies on one side: left vs right
    up = vertical is not None and vertical < -ORIENTATION_MARGIN
    side = horizontal is not None and horizontal < -ORIENTATION_MARGIN
    flip = {(True, True): "turned 180 degrees", (True, False): "upside down", (False, True): "mirrored left-right"}
    return {"top_bottom": vertical, "left_right": horizontal, "flip": flip.get((up, side))}


def check_orientation(parts: dict[str, _Split]) -> dict[str, dict[str, Any]]:
    """Per split: how its orientation compares with every other split's, and the verdict.

    Two maps per split: its mean image (the spine, the table and the body outline make it
    lopsided top to bottom) and its mean liver mask (the liver lies on one side). Against
    each other split, the top-bottom asymmetry of the image maps and the left-right
    asymmetry of the liver maps are correlated: below ``-ORIENTATION_MARGIN`` one is the
    other flipped along that axis. A split is ``flagged`` with a flip when that flip is
    found against most of the others (a pooled reference would be spoilt by the flipped
    split itself); of two splits, the second is named. Splits without liver are not compared.
    """
    maps = {
        n: (sp.atlas / len(sp.with_liver), sp.image_atlas / len(sp.stats)) for n, sp in parts.items() if sp.with_liver
    }
    names = list(maps)
    out: dict[str, dict[str, Any]] = {}
    if len(names) < 2:
        return out
    for i, name in enumerate(names):
        against = {other: _compare(maps[name], maps[other]) for other in names if other != name}
        wins = Counter(c["flip"] for c in against.values() if c["flip"])
        flagged = None
        if wins:
            flip, n = wins.most_common(1)[0]
            if 2 * n > len(against) or (len(names) == 2 and i == 1):
                flagged = flip
        out[name] = {"against": against, "flagged": flagged}
    return out


def _draw_samples(out_dir: Path, name: str, split: _Split) -> Path | None:
    """``samples_<split>.png``: up to N_SAMPLES images with liver, spread over the list, with the mask outlined."""
    from PIL import Image

    from liverseg.core.overlay import overlay_rgb

    if not split.with_liver:
        return None
    k = min(N_SAMPLES, len(split.with_liver))
    picks = [split.with_liver[int(round(j))] for j in np.linspace(0, len(split.with_liver) - 1, k)]
    cells = []
    for i in picks:
        img, mask = read_pair(split.samples[i])
        rgb = overlay_rgb(img, mask, thickness=max(1, round(max(img.shape) / SAMPLE_SIDE)))
        h, w = rgb.shape[:2]
        scale = SAMPLE_SIDE / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        cell = np.full((SAMPLE_SIDE, SAMPLE_SIDE, 3), 255, np.uint8)
        how = Image.Resampling.BOX if scale < 1 else Image.Resampling.NEAREST  # pixels stay pixels
        small = np.asarray(Image.fromarray(rgb).resize(size, how))
        top, left = (SAMPLE_SIDE - size[1]) // 2, (SAMPLE_SIDE - size[0]) // 2
        cell[top : top + size[1], left : left + size[0]] = small
        cells.append(cell)
    gap = np.full((SAMPLE_SIDE, 4, 3), 255, np.uint8)
    strip = np.concatenate([x for c in cells for x in (c, gap)][:-1], axis=1)
    path = out_dir / f"samples_{_file_part(name)}.png"
    Image.fromarray(strip).save(path, format="PNG", optimize=True)
    return path


def _identical_across_splits(images: list[ImageStats]) -> list[dict[str, Any]]:
    """Every image whose pixels also appear in another split, with the other splits' names."""
    by_digest: dict[str, set[str]] = {}
    for st in images:
        by_digest.setdefault(st.digest, set()).add(st.split)
    return [
        {"split": st.split, "image": st.image, "also_in": sorted(by_digest[st.digest] - {st.split})}
        for st in images
        if len(by_digest[st.digest]) > 1
    ]


def _color(i: int, name: str) -> str:
    return "0.35" if name == ALL else f"C{i % 10}"


def _draw_figures(
    out_dir: Path, parts: dict[str, _Split], splits: dict[str, dict[str, Any]], bins: int, categories: bool = False
) -> list[Path]:
    """The liver-pixel histograms (per split and, for several, all together), mean/std bars, gray levels."""
    from liverseg.apps import figures

    images = [st for sp in parts.values() for st in sp.stats]
    top = max(max((s.liver_percent for s in images), default=0.0), 1e-6)  # one x range for every histogram
    files: list[Path] = []
    for i, name in enumerate(list(parts) + ([ALL] if len(parts) > 1 else [])):
        pct = [s.liver_percent for s in (images if name == ALL else parts[name].stats)]
        png = out_dir / f"liver_hist_{_file_part(name)}.png"
        title = f"Liver-pixel percentage per mask: {name}"
        hist = figures.plot_liver_histogram(
            pct, png, bins=bins, max_percent=top, color=_color(i, name), title=title, categories=categories
        )
        files.append(figures.written(hist))
    names = list(splits)
    bars = figures.plot_split_bars(
        names,
        [splits[n]["liver_percent"]["mean"] or 0.0 for n in names],
        [splits[n]["liver_percent"]["std"] or 0.0 for n in names],
        out_dir / "liver_mean_std.png",
        colors=[_color(i, n) for i, n in enumerate(names)],
        title="Liver pixels per mask: mean and standard deviation per split",
    )
    files.append(figures.written(bars))
    gray = figures.plot_intensity_histograms({n: sp.hist for n, sp in parts.items()}, out_dir / "intensity.png")
    files.append(figures.written(gray))
    return files


def run_eda(
    sources: list[Path],
    out_dir: Path,
    *,
    names: list[str] | None = None,
    root: Path | None = None,
    bins: int = 20,
    study_categories: bool = False,
    progress: bool = False,
) -> EdaResult:
    """Measure every split, write the figures and summaries into ``out_dir``.

    Raises :class:`liverseg.core.errors.DataError` when a source cannot be listed at all
    (bad CSV, folder without masks) and :class:`~liverseg.core.errors.UsageError` for
    no sources or a wrong number of names; unreadable pairs are collected instead.
    """
    if not sources:
        raise UsageError("run_eda needs at least one data source")
    split_names = _unique_names(sources, names)
    parts = {name: _Split(discover(src, root=root, need_labels=True)) for name, src in zip(split_names, sources)}
    errors: list[dict[str, str]] = []
    for name, part in parts.items():
        _read_split(name, part, errors, progress)
    images = [st for part in parts.values() for st in part.stats]

    splits = {n: _summarise(sp.stats, sp.hist, len(sp.samples), sp.n_errors) for n, sp in parts.items()}
    if len(parts) > 1:
        all_hist = np.sum([sp.hist for sp in parts.values()], axis=0)
        splits[ALL] = _summarise(images, all_hist, sum(len(sp.samples) for sp in parts.values()), len(errors))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _draw_figures(out_dir, parts, splits, bins, study_categories)
    files += [p for p in (_draw_samples(out_dir, n, sp) for n, sp in parts.items()) if p is not None]
    overlap = _identical_across_splits(images)
    result = EdaResult(out_dir=out_dir, splits=splits, images=images, errors=errors, overlap=overlap, files=files)
    result.orientation = check_orientation(parts)
    sources_info = [
        {"split": n, "source": str(s), "pairs": len(parts[n].samples)} for n, s in zip(split_names, sources)
    ]
    files.append(_write_json(result, sources_info))
    files.append(_write_images_csv(result))
    files += _write_docs(result, sources_info)
    return result


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "split"


# ---------------------------------------------------------------- outputs


def _write_json(r: EdaResult, sources: list[dict[str, Any]]) -> Path:
    v = versions()
    data = {
        "liverseg": v["liverseg"],
        "versions": v,
        "written": datetime.now().astimezone().isoformat(timespec="seconds"),
        "sources": sources,
        "std": "population standard deviation (ddof=0)",
        "splits": r.splits,
        "unreadable": r.errors,
        "identical_images_across_splits": r.overlap,
        "orientation": {
            "rule": f"mean image and liver maps per split at {ATLAS}x{ATLAS}; against each other split the "
            "top-bottom asymmetry of the images and the left-right asymmetry of the livers are correlated, below "
            f"-{ORIENTATION_MARGIN} the axis is flipped; a flip found against most other splits flags the split",
            "splits": r.orientation,
        },
    }
    return write_text_atomic(r.out_dir / "eda.json", json.dumps(data, indent=2) + "\n")


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
    return write_text_atomic(r.out_dir / "eda_images.csv", df.to_csv(index=False))


def _tables(r: EdaResult, sources: list[dict[str, Any]]) -> list[Table]:
    s = r.splits
    counts = [
        [
            n,
            fmt(v["n_listed"]),
            fmt(v["n_read"]),
            fmt(v["n_unreadable"]),
            fmt(v["n_empty_masks"]),
            ", ".join(f"{k} ({c})" for k, c in v["image_sizes"].items()) or "—",
        ]
        for n, v in s.items()
    ]
    liver = [
        [n] + [fmt(v["liver_percent"][k], 3 if k == "min" else 2) for k in ("mean", "std", "min", "median", "max")]
        for n, v in s.items()
    ]
    gray = [
        [n] + [fmt(v["gray"][k], 1) for k in ("min", "max", "mean", "p1", "p99", "liver_mean")] for n, v in s.items()
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
        elif p.name.startswith("samples_"):
            cap = f"Sample images of {p.stem[len('samples_') :]} with the liver mask outlined (green)"
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
    for name, o in r.orientation.items():
        if o["flagged"]:
            flip = o["flagged"]
            how = ", ".join(
                f"{other}: top-bottom {fmt(a['top_bottom'], 2)}, left-right {fmt(a['left_right'], 2)}"
                for other, a in o["against"].items()
                if a["flip"] == flip
            )
            out.append(
                f"split {name} looks stored {flip} relative to the others (agreement of its mean image's top-bottom "
                f"and its mean liver's left-right asymmetry with theirs, -1 = flipped: {how}). Check the sample "
                "images; a model trained on one orientation fails on the other."
            )
    empty = sum(v["n_empty_masks"] for k, v in r.splits.items() if k != ALL)
    if empty:
        out.append(f"{empty} mask(s) contain no liver.")
    return out


def _markdown(r: EdaResult, tables: list[Table], figs: list[tuple[Path, str]], problems: list[str]) -> str:
    errs = r.errors[:MAX_LISTED_ERRORS]
    md = ["# Data summary (liverseg-eda)", ""]
    for note in problems:
        md += [f"> **Note:** {note}", ""]
    for title, header, rows, _ in tables:
        md += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        md.append("")
    md += ["Standard deviations are population ones (ddof=0).", "", "## Figures", ""]
    md += [f"![{cap}]({png.name})\n\n*{cap}*\n" for png, cap in figs]
    if r.errors:
        md += ["## Unreadable pairs", ""] + [f"- `{e['image']}` ({e['split']}): {e['error']}" for e in errs]
        if len(r.errors) > len(errs):
            md.append(f"- ... and {len(r.errors) - len(errs)} more (all in eda.json)")
        md.append("")
    return "\n".join(md)


def _html(r: EdaResult, tables: list[Table], figs: list[tuple[Path, str]], problems: list[str]) -> str:
    errs = r.errors[:MAX_LISTED_ERRORS]
    body = ["<h1>Data summary</h1>", '<p class="sub">liverseg-eda: liver masks and images per split</p>']
    body += [f'<p class="warn">{esc(note)}</p>' for note in problems]
    for title, header, rows, numeric in tables:
        body.append(f"<h2>{esc(title)}</h2>" + html_table(header, rows, numeric=numeric))
    body.append('<p class="note">Standard deviations are population ones (ddof=0).</p><h2>Figures</h2>')
    body.append('<div class="cases">')
    for png, cap in figs:
        body.append(f"<figure>{img_tag(png.read_bytes(), cap)}<figcaption>{esc(cap)}</figcaption></figure>")
    body.append("</div>")
    if r.errors:
        body.append("<h2>Unreadable pairs</h2>")
        rows = [[e["split"], e["image"], e["error"]] for e in errs]
        body.append(html_table(["split", "image", "reason"], rows, row_classes=["failed"] * len(errs)))
        if len(r.errors) > len(errs):
            body.append(f'<p class="note">... and {len(r.errors) - len(errs)} more (all in eda.json)</p>')
    return html_page("liverseg data summary", "\n".join(body))


def _write_docs(r: EdaResult, sources: list[dict[str, Any]]) -> list[Path]:
    """``eda.md`` and the self-contained ``eda.html`` (figures embedded), written atomically."""
    tables, figs, problems = _tables(r, sources), _figure_list(r), _problems(r)
    md_path = write_text_atomic(r.out_dir / "eda.md", _markdown(r, tables, figs, problems))
    html_path = write_text_atomic(r.out_dir / "eda.html", _html(r, tables, figs, problems))
    return [md_path, html_path]


# ---------------------------------------------------------------- CLI


def _default_out() -> Path:
    return Path("runs") / f"eda-{datetime.now():%Y%m%d-%H%M%S}"


@command()
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
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
@click.option(
    "--study-categories",
    is_flag=True,
    help="Figures 1-4 in the study's 1%-wide categories (<1%, 1-2%, ..., >19%) instead of --bins bins.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
def main(
    data: tuple[Path, ...],
    out_dir: Path | None,
    names: tuple[str, ...],
    root: Path | None,
    bins: int,
    study_categories: bool,
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
    result = run_eda(
        list(data),
        out_dir or _default_out(),
        names=list(names) or None,
        root=root,
        bins=bins,
        study_categories=study_categories,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    for name, s in result.splits.items():
        lp = s["liver_percent"]
        click.echo(
            f"{name:>10}: {s['n_read']}/{s['n_listed']} pairs, {s['n_empty_masks']} empty masks, "
            f"liver {fmt(lp['mean'], 2)} ± {fmt(lp['std'], 2)} % of the image"
        )
    for note in _problems(result):
        click.echo(f"note: {note}")
    for err in result.errors:
        click.echo(f"unreadable: {err['image']}: {err['error']}", err=True)
    click.echo(f"wrote {os.fspath(result.out_dir / 'eda.html')}")
    sys.exit(EXIT_FAILED if result.errors else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
