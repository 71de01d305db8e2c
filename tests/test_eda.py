"""liverseg-eda: figures and numbers per split, on synthetic folders and on real MSD slices."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from liverseg.apps.eda import main, run_eda, split_name

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("liver_mean_std.png", "intensity.png")


def assert_png(path: Path) -> None:
    """Valid PNG, sensible size, not blank."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        rgb = np.asarray(im.convert("RGB"))
    assert 200 <= w <= 3000 and 200 <= h <= 3000, (path.name, w, h)
    assert np.any(rgb < 245, axis=2).mean() > 0.02, f"{path.name} is almost blank"
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 8


class Tags(HTMLParser):
    VOID = {"img", "meta", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.srcs = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src", ""))
        if "href" in a:
            self.errors.append(f"link {a['href']}")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"bad </{tag}>")


def write_split(
    folder: Path, rng, fractions: list[float], *, size: int = 40, dup_of: Path | None = None
) -> list[float]:
    """images/ + masks/ with a square liver of the given area fractions; returns the exact percentages."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    out = []
    for i, f in enumerate(fractions):
        img = rng.integers(0, 60, (size, size)).astype(np.uint8)
        mask = np.zeros((size, size), bool)
        side = int(round(np.sqrt(f) * size))
        mask[5 : 5 + side, 3 : 3 + side] = True
        img[mask] = 120
        Image.fromarray(img).save(folder / "images" / f"s{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"s{i}.png")
        out.append(100.0 * mask.sum() / mask.size)
    if dup_of is not None:  # the same pixels as another split's first image
        (folder / "images" / "dup.png").write_bytes((dup_of / "images" / "s0.png").read_bytes())
        (folder / "masks" / "dup.png").write_bytes((dup_of / "masks" / "s0.png").read_bytes())
        out.append(float(np.mean(np.asarray(Image.open(dup_of / "masks" / "s0.png")) > 127) * 100))
    return out


def test_split_name(tmp_path):
    assert split_name(Path("lists/train_x.csv")) == "train"
    assert split_name(Path("val_pairs.csv")) == "val"
    assert split_name(Path("test.csv")) == "test"
    (tmp_path / "holdout").mkdir()
    assert split_name(tmp_path / "holdout") == "holdout"


def test_eda_synthetic_cli(tmp_path, rng):
    train = write_split(tmp_path / "train", rng, [0.05, 0.10, 0.20, 0.0, 0.15])
    val = write_split(tmp_path / "val", rng, [0.04, 0.30], dup_of=tmp_path / "train")
    # an unreadable pair: mask size differs from its image
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "val" / "images" / "bad.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "val" / "masks" / "bad.png")
    out = tmp_path / "eda"
    res = CliRunner().invoke(main, [str(tmp_path / "train"), str(tmp_path / "val"), "--out", str(out), "--bins", "10"])
    assert res.exit_code == 1, res.output  # one pair could not be read
    assert "train: 5/5 pairs, 1 empty masks" in res.output
    for name in ("liver_hist_train.png", "liver_hist_val.png", "liver_hist_all.png", *FIGURES):
        assert_png(out / name)

    data = json.loads((out / "eda.json").read_text())
    s = data["splits"]
    assert list(s) == ["train", "val", "all"]
    assert s["train"]["n_read"] == 5 and s["train"]["n_empty_masks"] == 1
    assert s["val"]["n_listed"] == 4 and s["val"]["n_read"] == 3 and s["val"]["n_unreadable"] == 1
    assert s["all"]["n_read"] == 8
    assert s["train"]["liver_percent"]["mean"] == pytest.approx(np.mean(train))
    assert s["train"]["liver_percent"]["std"] == pytest.approx(np.std(train))
    assert s["all"]["liver_percent"]["mean"] == pytest.approx(np.mean(train + val))
    assert s["train"]["image_sizes"] == {"40x40": 5}
    assert s["train"]["gray"]["max"] == 120 and s["train"]["gray"]["liver_mean"] == pytest.approx(120)
    assert sum(s["val"]["gray_histogram"]) == 3 * 40 * 40
    assert [e["image"].endswith("bad.png") for e in data["unreadable"]] == [True]
    assert "is 40x40 but mask" in data["unreadable"][0]["error"]
    leaks = data["identical_images_across_splits"]
    assert {(d["split"], Path(d["image"]).name) for d in leaks} == {("train", "s0.png"), ("val", "dup.png")}

    rows = pd.read_csv(out / "eda_images.csv")
    assert len(rows) == 8 and set(rows["split"]) == {"train", "val"}

    md = (out / "eda.md").read_text()
    assert "![" in md and "liver_hist_all.png" in md and "bad.png" in md and "data leak" in md
    html = (out / "eda.html").read_text()
    p = Tags()
    p.feed(html)
    assert not p.errors and not p.stack, (p.errors, p.stack)
    assert len(p.srcs) == 7 and all(s.startswith("data:image/png;base64,") for s in p.srcs)  # 5 charts, 2 samples
    assert "Sample images of train" in html and "Sample images of val" in html
    Image.open(io.BytesIO(base64.b64decode(p.srcs[0].split(",", 1)[1]))).verify()


def test_eda_single_split_and_names(tmp_path, rng):
    write_split(tmp_path / "only", rng, [0.1, 0.2])
    r = run_eda([tmp_path / "only"], tmp_path / "o", names=["cohort A"])
    assert list(r.splits) == ["cohort A"] and not r.errors and not r.overlap
    assert (tmp_path / "o" / "liver_hist_cohort_A.png").exists()
    assert not (tmp_path / "o" / "liver_hist_all.png").exists()  # one split: "all" would repeat it


def test_eda_usage_errors(tmp_path, rng):
    (tmp_path / "noimg").mkdir()
    res = CliRunner().invoke(main, [str(tmp_path / "noimg"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no images" in res.output
    write_split(tmp_path / "a", rng, [0.1])
    res = CliRunner().invoke(main, [str(tmp_path / "a"), "--name", "x", "--name", "y"])
    assert res.exit_code == 2 and "--name" in res.output


@pytest.mark.realdata
def test_eda_msd_splits_by_volume(msd_dir, tmp_path):
    """Split CSVs of msd-liver-256 by patient (volume_idx), a few volumes each, as the study's X/Y lists."""
    m = pd.read_csv(msd_dir / "manifest.csv", dtype=str)
    vols = sorted(m["volume_idx"].unique())
    parts = {"train": vols[:6], "val": vols[6:8], "test": vols[8:10]}
    csvs = []
    for name, v in parts.items():
        ids = m.loc[m["volume_idx"].isin(v), "id"]
        pd.DataFrame({"X": [f"images/{i}.png" for i in ids]}).to_csv(tmp_path / f"{name}_x.csv", index=False)
        pd.DataFrame({"Y": [f"masks/{i}.png" for i in ids]}).to_csv(tmp_path / f"{name}_y.csv", index=False)
        csvs.append(str(tmp_path / f"{name}_x.csv"))
    out = tmp_path / "eda"
    res = CliRunner().invoke(main, [*csvs, "--data-root", str(msd_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "eda.json").read_text())
    assert list(data["splits"]) == ["train", "val", "test", "all"]
    for name in ("train", "val", "test", "all"):
        assert_png(out / f"liver_hist_{name}.png")
        s = data["splits"][name]
        assert s["n_read"] == s["n_listed"] > 0 and s["n_empty_masks"] == 0  # every MSD slice has liver
        assert set(s["image_sizes"]) == {"256x256"}
        assert 0 < s["liver_percent"]["mean"] < 40
    for name in FIGURES:
        assert_png(out / name)
    assert not data["identical_images_across_splits"]


# ---------------------------------------------------------------- issue 16: sample images, orientation


def _liver_split(folder: Path, rng, n: int = 6, size: int = 48, flip=None) -> None:
    """images/ + masks/ with the liver where the radiological view has it (left, upper middle), optionally flipped."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = size * (0.35 + 0.03 * rng.standard_normal()), size * (0.28 + 0.03 * rng.standard_normal())
        mask = ((yy - cy) / (0.18 * size)) ** 2 + ((xx - cx) / (0.14 * size)) ** 2 < 1
        img = rng.integers(0, 60, (size, size)).astype(np.uint8)
        img[mask] = 130
        if flip is not None:
            img, mask = flip(img), flip(mask)
        Image.fromarray(np.ascontiguousarray(img)).save(folder / "images" / f"s{i}.png")
        Image.fromarray(np.ascontiguousarray(mask).astype(np.uint8) * 255).save(folder / "masks" / f"s{i}.png")


@pytest.mark.parametrize(
    ("flip", "verdict"),
    [
        (lambda a: a[::-1, :], "upside down"),
        (lambda a: a[:, ::-1], "mirrored left-right"),
        (lambda a: a[::-1, ::-1], "turned 180 degrees"),
    ],
)
def test_eda_flags_a_split_stored_flipped(tmp_path, rng, flip, verdict):
    _liver_split(tmp_path / "train", rng)
    _liver_split(tmp_path / "val", rng)
    _liver_split(tmp_path / "test", rng, flip=flip)
    out = tmp_path / "eda"
    res = CliRunner().invoke(main, [str(tmp_path / s) for s in ("train", "val", "test")] + ["--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"split test looks stored {verdict} relative to the others" in res.output
    assert "split train looks" not in res.output and "split val looks" not in res.output
    o = json.loads((out / "eda.json").read_text())["orientation"]["splits"]
    assert o["test"]["flagged"] == verdict and o["train"]["flagged"] is None and o["val"]["flagged"] is None
    assert "looks stored" in (out / "eda.html").read_text()


def test_eda_same_orientation_is_not_flagged_and_samples_are_drawn(tmp_path, rng):
    _liver_split(tmp_path / "train", rng, n=9)
    _liver_split(tmp_path / "val", rng, n=3)
    out = tmp_path / "eda"
    res = CliRunner().invoke(main, [str(tmp_path / "train"), str(tmp_path / "val"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "looks stored" not in res.output
    from liverseg.apps.eda import N_SAMPLES, SAMPLE_SIDE

    train = np.asarray(Image.open(out / "samples_train.png"))
    val = np.asarray(Image.open(out / "samples_val.png"))
    assert train.shape == (SAMPLE_SIDE, N_SAMPLES * SAMPLE_SIDE + (N_SAMPLES - 1) * 4, 3)
    assert val.shape == (SAMPLE_SIDE, 3 * SAMPLE_SIDE + 2 * 4, 3)
    green = (train[..., 1] > 200) & (train[..., 0] < 80) & (train[..., 2] < 80)
    assert green.sum() > 50, "the mask outline is drawn"
