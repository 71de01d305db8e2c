"""liverseg-split: study-format lists, reproducible, and grouped by patient without leaks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from liverseg.core.images import discover
from liverseg.trainer.split import main, split_indices


def _png(path: Path, value: int = 0, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


def make_volumes(root: Path, slices_per_volume: list[int]) -> Path:
    """``root/images/vol<V>_s<K>.png`` + ``root/masks/...`` and a pairs CSV with a volume column."""
    rows = []
    for v, n in enumerate(slices_per_volume):
        for k in range(n):
            name = f"vol{v:02d}_s{k:02d}.png"
            _png(root / "images" / name, 10)
            _png(root / "masks" / name, 255)
            rows.append({"X": f"images/{name}", "Y": f"masks/{name}", "volume": f"{v}"})
    pd.DataFrame(rows).to_csv(root / "pairs.csv", index=False)
    return root


def _read_split(out: Path, name: str) -> tuple[list[str], list[str]]:
    x = pd.read_csv(out / f"{name}_x.csv", dtype=str)
    y = pd.read_csv(out / f"{name}_y.csv", dtype=str)
    assert list(x.columns) == ["X"] and list(y.columns) == ["Y"]
    return list(x["X"]), list(y["Y"])


def test_split_indices_default_ratios_and_reproducible():
    parts = split_indices(100)
    assert {k: len(v) for k, v in parts.items()} == {"train": 72, "val": 18, "test": 10}
    assert sorted(i for v in parts.values() for i in v) == list(range(100))
    assert split_indices(100) == parts
    assert split_indices(100, seed=43) != parts


def test_grouped_split_keeps_groups_whole():
    rng = np.random.default_rng(0)
    groups = [str(g) for g in rng.integers(0, 40, 400)]
    parts = split_indices(len(groups), groups, seed=1)
    seen = {name: {groups[i] for i in idx} for name, idx in parts.items()}
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    assert sum(len(v) for v in parts.values()) == 400
    assert abs(len(parts["test"]) / 400 - 0.1) < 0.03
    assert abs(len(parts["val"]) / (400 - len(parts["test"])) - 0.2) < 0.03
    assert split_indices(len(groups), groups, seed=1) == parts


def test_cli_pairs_csv_grouped_by_column(tmp_path: Path, monkeypatch):
    root = make_volumes(tmp_path / "ds", [5, 3, 8, 2, 6, 4, 7, 5, 3, 6, 4, 5])
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "split"
    args = ["ds/pairs.csv", "-o", str(out), "--output-root", "ds", "--group-by", "volume", "--seed", "3"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    info = json.loads((out / "split.json").read_text())
    assert info["seed"] == 3 and info["counts"]["total"] == 58 and info["groups"]["total"] == 12
    vols = {}
    for name in ("train", "val", "test"):
        xs, ys = _read_split(out, name)
        assert [x.replace("images/", "masks/") for x in xs] == ys  # rows pair up
        vols[name] = {x.split("/")[-1][:5] for x in xs}
        assert sorted(vols[name]) == [f"vol{int(g):02d}" for g in info["group_ids"][name]]
        # written relative to --output-root: they resolve with data_root = ds
        assert all((root / x).exists() for x in xs)
        assert len(discover(out / f"{name}_x.csv", root=root, need_labels=True)) == len(xs)
    assert not (vols["train"] & vols["val"]) and not (vols["train"] & vols["test"]) and not (vols["val"] & vols["test"])
    before = {p.name: p.read_text() for p in out.iterdir()}
    assert CliRunner().invoke(main, args).exit_code == 0
    assert {p.name: p.read_text() for p in out.iterdir()} == before  # same seed, same files


def test_cli_folder_group_pattern_and_study_csv(tmp_path: Path, monkeypatch):
    make_volumes(tmp_path / "ds", [4] * 10)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["ds", "-o", "s1", "--group-pattern", r"vol(\d+)_"])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "s1" / "split.json").read_text())
    assert info["groups"] == {"train": 7, "val": 2, "test": 1, "total": 10}
    assert info["counts"] == {"train": 28, "val": 8, "test": 4, "total": 40}
    xs, _ = _read_split(tmp_path / "s1", "train")
    assert xs[0].startswith("ds/images/")  # default: relative to the current directory

    # a study *_x.csv with its *_y.csv partner, split by slice, absolute paths
    x, y = _read_split(tmp_path / "s1", "train")
    pd.DataFrame({"X": x}).to_csv(tmp_path / "all_x.csv", index=False)
    pd.DataFrame({"Y": y}).to_csv(tmp_path / "all_y.csv", index=False)
    r = CliRunner().invoke(main, ["all_x.csv", "-o", "s2", "--absolute", "--test-fraction", "0.25"])
    assert r.exit_code == 0, r.output
    counts = json.loads((tmp_path / "s2" / "split.json").read_text())["counts"]
    assert counts == {"train": 17, "val": 4, "test": 7, "total": 28}
    xs, _ = _read_split(tmp_path / "s2", "test")
    assert all(Path(p).is_absolute() and Path(p).exists() for p in xs)


def test_cli_errors(tmp_path: Path, monkeypatch):
    make_volumes(tmp_path / "ds", [2, 2, 2])
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["ds/pairs.csv", "--group-by", "patient"])
    assert r.exit_code == 2 and "no column 'patient'" in r.output and "volume" in r.output
    r = CliRunner().invoke(main, ["ds", "--group-by", "volume"])
    assert r.exit_code == 2 and "--group-pattern" in r.output
    r = CliRunner().invoke(main, ["ds", "--group-pattern", "patient(\\d+)"])
    assert r.exit_code == 2 and "does not match" in r.output
    r = CliRunner().invoke(main, ["ds", "--group-by", "a", "--group-pattern", "b"])
    assert r.exit_code == 2
    # a manifest row whose file is missing is named by row
    pd.DataFrame(
        {"id": ["a", "b"], "image_path": ["x/a.png", "x/b.png"], "mask_path": ["y/a.png", "y/b.png"], "pid": ["1", "2"]}
    ).to_csv(tmp_path / "m.csv", index=False)
    _png(tmp_path / "x" / "a.png")
    _png(tmp_path / "y" / "a.png")
    r = CliRunner().invoke(main, ["m.csv", "--group-by", "pid"])
    assert r.exit_code == 2 and "m.csv row 3" in r.output and "image file not found" in r.output
    _png(tmp_path / "x" / "b.png")
    _png(tmp_path / "y" / "b.png")
    r = CliRunner().invoke(
        main, ["m.csv", "--group-by", "pid", "-o", "s", "--test-fraction", "0", "--val-fraction", "0.5"]
    )
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "s" / "test_x.csv").exists()  # an empty split writes no lists
    assert _read_split(tmp_path / "s", "train")[0] in (["x/a.png"], ["x/b.png"])


@pytest.mark.realdata
def test_msd_manifest_split_by_volume(msd_dir: Path, tmp_path: Path):
    out = tmp_path / "msd"
    args = [str(msd_dir / "manifest.csv"), "-o", str(out), "--output-root", str(msd_dir), "--group-by", "volume_idx"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    manifest = pd.read_csv(msd_dir / "manifest.csv", dtype=str)
    volume_of = {f"images/{i}.png": v for i, v in zip(manifest["id"], manifest["volume_idx"])}
    info = json.loads((out / "split.json").read_text())
    assert info["counts"]["total"] == len(manifest) == 623 and info["groups"]["total"] == 122
    vols = {}
    for name in ("train", "val", "test"):
        xs, ys = _read_split(out, name)
        assert all(x.startswith("images/") for x in xs) and [x.replace("images/", "masks/") for x in xs] == ys
        vols[name] = {volume_of[x] for x in xs}
        assert len(vols[name]) == info["groups"][name]
    assert not (vols["train"] & vols["val"]) and not (vols["train"] & vols["test"]) and not (vols["val"] & vols["test"])
    assert abs(info["fractions"]["test"] - 0.1) < 0.02
    assert abs(info["counts"]["val"] / (623 - info["counts"]["test"]) - 0.2) < 0.02
    # the written lists load for training with data_root = the msd folder
    assert len(discover(out / "val_x.csv", root=msd_dir, need_labels=True)) == info["counts"]["val"]
    before = (out / "train_x.csv").read_text()
    assert CliRunner().invoke(main, args).exit_code == 0 and (out / "train_x.csv").read_text() == before
