"""``liverseg-split``: train / validation / test lists in the study's CSV format.

Writes ``train_x.csv``/``train_y.csv``, ``val_x.csv``/``val_y.csv`` and
``test_x.csv``/``test_y.csv`` (header ``X`` or ``Y``, one path per row, as the study's
``utils/create_split.py`` did) and ``split.json`` (counts, groups per split, seed).

Sources:

* a pairs CSV (``X,Y``) or a study ``*_x.csv`` with its ``*_y.csv`` partner;
* a folder (``images/`` + ``masks/``, ``Images/`` + ``Labels/``, or ``NNN.png`` + ``NNN_mask.png``);
* a manifest CSV: an ``id`` column naming ``images/<id>.png`` and ``masks/<id>.png``
  beside the manifest (as in ``msd-liver-256/manifest.csv``), or ``image_path`` and
  ``mask_path`` columns (or ``image`` and ``mask``) naming files that exist.

Default split (the study's): 10% test, then 20% of the rest for validation, seed 42.

Grouped split (``--group-by COLUMN`` of a CSV source, or ``--group-pattern REGEX`` on
the image file name): all slices of one group (patient) go to one split. Groups are
shuffled with the seed and taken whole, each one joining the test (then the
validation) split while that brings its slice count closer to the target, so slice
fractions approximate the ratios. Neighbouring slices of one patient are near copies,
so a split by slice makes validation and test numbers meaningless.

Paths in the written CSVs are relative to ``--output-root`` (pass the same folder as
``data_root`` / ``--data-root`` when training), or absolute with ``--absolute``;
by default relative to the current directory, where the study ran its commands.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from liverseg.core.cli import command, out_option
from liverseg.core.errors import UsageError
from liverseg.core.files import write_text_atomic
from liverseg.core.images import IMAGE_EXTENSIONS, DataError, Sample, discover, group_of, read_csv

SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------- reading the source


def _find_by_id(folder: Path, ident: str, suffixes: tuple[str, ...] = ("",)) -> Path | None:
    for suffix in suffixes:
        for ext in IMAGE_EXTENSIONS:
            p = folder / f"{ident}{suffix}{ext}"
            if p.exists():
                return p
    return None


def _resolve_existing(value: str, manifest: Path, root: Path | None) -> Path | None:
    p = Path(value)
    if p.is_absolute():
        return p if p.exists() else None
    for base in ((root or Path.cwd()), manifest.parent):
        if (base / p).exists():
            return base / p
    return None


def read_manifest(path: Path, root: Path | None = None) -> tuple[list[Sample], pd.DataFrame]:
    """Samples of a manifest CSV (``id`` -> images/ and masks/ beside it, or path columns).

    The CSV is read by :mod:`liverseg.core.images`'s reader, so an unreadable or empty file
    is a :class:`DataError` naming it, as for every other list; a bad row names its row.
    """
    df = read_csv(path)
    img_dir = next((path.parent / d for d in ("images", "Images") if (path.parent / d).is_dir()), None)
    mask_dir = next(
        (path.parent / d for d in ("masks", "Labels", "labels", "Masks") if (path.parent / d).is_dir()), None
    )
    path_cols = next(((a, b) for a, b in (("image_path", "mask_path"), ("image", "mask")) if a in df and b in df), None)
    if "id" not in df.columns and path_cols is None:
        raise DataError(
            f"{path}: not a manifest: needs an 'id' column (images/<id>.png, masks/<id>.png beside it) "
            f"or image_path and mask_path columns; header is {list(df.columns)}"
        )
    samples = []
    for i, row in enumerate(df.to_dict("records")):
        where = f"{path.name} row {i + 2}"
        image = mask = None
        if "id" in df.columns and img_dir is not None and mask_dir is not None and row["id"].strip():
            ident = row["id"].strip()
            image = _find_by_id(img_dir, ident)
            mask = _find_by_id(mask_dir, ident, ("", "_mask"))
        if (image is None or mask is None) and path_cols is not None:
            image = _resolve_existing(row[path_cols[0]], path, root) if row[path_cols[0]].strip() else None
            mask = _resolve_existing(row[path_cols[1]], path, root) if row[path_cols[1]].strip() else None
        if image is None or mask is None:
            what = "image" if image is None else "mask"
            tried = []
            if "id" in df.columns:
                images = img_dir or path.parent / "images"
                masks = mask_dir or path.parent / "masks"
                tried.append(f"{images}/{row['id']}.* and {masks}/{row['id']}.*")
            if path_cols is not None:
                tried.append(f"columns {path_cols[0]}={row[path_cols[0]]!r}, {path_cols[1]}={row[path_cols[1]]!r}")
            raise DataError(f"{path}: {where}: {what} file not found (tried {'; '.join(tried)})")
        samples.append(Sample(image, mask, where))
    if not samples:
        raise DataError(f"{path}: the manifest is empty (header only)")
    return samples, df


def load_source(
    source: Path,
    labels: Path | None = None,
    root: Path | None = None,
    group_by: str | None = None,
    group_pattern: str | None = None,
) -> tuple[list[Sample], list[str] | None]:
    """(samples with masks, group of each sample or None); every file must exist."""
    table: pd.DataFrame | None = None
    if source.is_file() and source.suffix.lower() == ".csv":
        head = read_csv(source)  # DataError naming the file when it is empty or not a CSV
        if "X" in head.columns or "Y" in head.columns:
            samples = discover(source, labels=labels, root=root, need_labels=True)
            if group_by is not None:
                table = head
        else:
            samples, table = read_manifest(source, root)
    else:
        samples = discover(source, labels=labels, root=root, need_labels=True)
    for s in samples:
        for p, what in ((s.image, "image"), (s.mask, "mask")):
            if p is None or not Path(p).exists():
                raise DataError(f"{s.origin or source}: {what} file not found: {p}")
    groups: list[str] | None = None
    if group_by is not None:
        if table is None:
            raise DataError(
                f"{source}: --group-by needs a CSV source with a {group_by!r} column (use --group-pattern for folders)"
            )
        if group_by not in table.columns:
            raise DataError(f"{source}: no column {group_by!r} for --group-by; columns are {list(table.columns)}")
        groups = [str(v).strip() for v in table[group_by]]
        for i, g in enumerate(groups):
            if not g:
                raise DataError(f"{source}: row {i + 2}: column {group_by} is empty")
    elif group_pattern is not None:
        groups = [group_of(Path(s.image.name), group_pattern) for s in samples]
    return samples, groups


# ---------------------------------------------------------------- splitting


def _take(order: list[str], sizes: dict[str, int], target: int) -> tuple[list[str], list[str]]:
    """Walk the groups in order; take one when it brings the count closer to ``target``."""
    chosen: list[str] = []
    rest: list[str] = []
    count = 0
    for g in order:
        if abs(count + sizes[g] - target) < abs(count - target):
            chosen.append(g)
            count += sizes[g]
        else:
            rest.append(g)
    if not chosen and target > 0 and len(rest) > 1:
        # every group is larger than twice the target: take the one closest to it
        g = min(rest, key=lambda k: (abs(sizes[k] - target), rest.index(k)))
        chosen.append(g)
        rest.remove(g)
    return chosen, rest


def split_indices(
    n: int, groups: list[str] | None = None, test_fraction: float = 0.1, val_fraction: float = 0.2, seed: int = 42
) -> dict[str, list[int]]:
    """Indices per split. Without groups every item is its own group (exact counts)."""
    if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1:
        raise ValueError(f"fractions must be in [0, 1): test {test_fraction}, val {val_fraction}")
    keys = groups if groups is not None else [str(i) for i in range(n)]
    if len(keys) != n:
        raise ValueError(f"{len(keys)} group labels for {n} items")
    members: dict[str, list[int]] = {}
    for i, g in enumerate(keys):
        members.setdefault(g, []).append(i)
    sizes = {g: len(m) for g, m in members.items()}
    unique = sorted(members, key=lambda g: (len(g), g)) if groups is None else sorted(members)
    rng = np.random.default_rng(seed)
    order = [unique[i] for i in rng.permutation(len(unique))]
    test, rest = _take(order, sizes, int(round(n * test_fraction)))
    n_rest = sum(sizes[g] for g in rest)
    val, train = _take(rest, sizes, int(round(n_rest * val_fraction)))
    out = {}
    for name, gs in (("train", train), ("val", val), ("test", test)):
        out[name] = sorted(i for g in gs for i in members[g])
    return out


# ---------------------------------------------------------------- writing


def _written(p: Path | None, output_root: Path | None, absolute: bool) -> str:
    if p is None:  # load_source only returns samples with masks
        raise DataError("a sample without a mask cannot be written to a split")
    full = os.path.abspath(p)
    if absolute:
        return Path(full).as_posix()
    base = os.path.abspath(output_root) if output_root is not None else os.getcwd()
    return Path(os.path.relpath(full, base)).as_posix()


def write_split(
    samples: list[Sample],
    parts: dict[str, list[int]],
    out_dir: Path,
    *,
    output_root: Path | None = None,
    absolute: bool = False,
    groups: list[str] | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """The six study-format CSVs (empty splits are skipped) and ``split.json``; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    for name in SPLITS:
        idx = parts[name]
        for suffix in ("x", "y"):
            (out_dir / f"{name}_{suffix}.csv").unlink(missing_ok=True)
        if not idx:
            continue
        x_csv, y_csv = out_dir / f"{name}_x.csv", out_dir / f"{name}_y.csv"
        xs = pd.DataFrame({"X": [_written(samples[i].image, output_root, absolute) for i in idx]})
        ys = pd.DataFrame({"Y": [_written(samples[i].mask, output_root, absolute) for i in idx]})
        write_text_atomic(x_csv, xs.to_csv(index=False))  # a half-written list would train on part of a split
        write_text_atomic(y_csv, ys.to_csv(index=False))
        files[name] = {"x": x_csv.name, "y": y_csv.name}
    n = len(samples)
    summary: dict[str, Any] = {
        **(info or {}),
        "counts": {name: len(parts[name]) for name in SPLITS} | {"total": n},
        "fractions": {name: round(len(parts[name]) / n, 4) for name in SPLITS},
        "files": files,
        "paths": (
            "absolute" if absolute else f"relative to {os.path.abspath(output_root) if output_root else os.getcwd()}"
        ),
    }
    if groups is not None:
        per = {name: sorted({groups[i] for i in parts[name]}, key=_natural) for name in SPLITS}
        summary["groups"] = {name: len(per[name]) for name in SPLITS} | {"total": len(set(groups))}
        summary["group_ids"] = per
    return write_text_atomic(out_dir / "split.json", json.dumps(summary, indent=2) + "\n")


def _natural(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


# ---------------------------------------------------------------- command line


@command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--y",
    "labels",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Masks (a *_y.csv or folder) when SOURCE does not lead to them.",
)
@out_option(
    "out_dir",
    ["--out-dir"],
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("splits"),
    show_default=True,
    help="Where the CSVs and split.json go.",
)
@click.option(
    "--output-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write paths relative to this folder (train with --data-root set to it). "
    "Default: relative to the current directory.",
)
@click.option("--absolute", is_flag=True, help="Write absolute paths.")
@click.option(
    "--data-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder that relative paths in a SOURCE CSV resolve against first (default: current directory).",
)
@click.option(
    "--test-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="Share of all slices for the test split.",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of the remaining (train+val) slices for validation.",
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--group-by", default=None, help="CSV column naming each slice's patient (e.g. volume_idx).")
@click.option(
    "--group-pattern",
    default=None,
    help="Regular expression on the image file name whose first group is the patient, e.g. 'vol(\\d+)_'.",
)
def main(
    source: Path,
    labels: Path | None,
    out_dir: Path,
    output_root: Path | None,
    absolute: bool,
    data_root: Path | None,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    group_by: str | None,
    group_pattern: str | None,
) -> None:
    """Split SOURCE (pairs CSV, study *_x.csv, folder or manifest CSV) into train/val/test study CSVs."""
    if group_by and group_pattern:
        raise click.UsageError("use --group-by or --group-pattern, not both")
    if absolute and output_root is not None:
        raise click.UsageError("use --output-root or --absolute, not both")
    if group_pattern is not None:
        try:
            re.compile(group_pattern)
        except re.error as e:
            raise click.BadParameter(f"not a regular expression: {e}", param_hint="--group-pattern") from None
    samples, groups = load_source(source, labels, data_root, group_by, group_pattern)  # DataError: exit 2
    parts = split_indices(len(samples), groups, test_fraction, val_fraction, seed)
    if not parts["train"]:
        raise UsageError(
            f"the training split is empty ({len(samples)} slices"
            f"{f', {len(set(groups))} groups' if groups else ''}); lower the fractions"
        )
    info = {
        "source": str(source),
        "seed": seed,
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
        "group_by": group_by,
        "group_pattern": group_pattern,
    }
    path = write_split(samples, parts, out_dir, output_root=output_root, absolute=absolute, groups=groups, info=info)
    counts = ", ".join(f"{k} {len(v)}" for k, v in parts.items())
    if groups is not None:
        counts += " slices; groups " + ", ".join(f"{k} {len({groups[i] for i in v})}" for k, v in parts.items())
    click.echo(f"{counts}\nwrote {out_dir}/{{train,val,test}}_{{x,y}}.csv and {path}")


if __name__ == "__main__":
    main()
