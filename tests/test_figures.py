"""liverseg.apps.figures: study colours, panels, training curves, data plots (synthetic, small)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from liverseg.apps import figures
from liverseg.apps.figures import FN_COLOR, FP_COLOR, OUTLINE_COLOR, TP_COLOR, overlay_rgb
from liverseg.core import overlay
from liverseg.trainer.curves import read_epochs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(src: Path | bytes, *, min_side: int = 100, max_side: int = 4000) -> np.ndarray:
    """A valid PNG of sensible size that is not blank; returns its RGB pixels."""
    data = src if isinstance(src, bytes) else Path(src).read_bytes()
    assert data[:8] == PNG_MAGIC
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        w, h = im.size
        rgb = np.asarray(im.convert("RGB"))
    assert min_side <= w <= max_side and min_side <= h <= max_side, (w, h)
    not_white = np.any(rgb < 245, axis=2).mean()
    assert not_white > 0.02, f"figure is almost blank ({not_white:.1%} non-white pixels)"
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 8, "figure has almost no distinct colours"
    return rgb


def has_color(rgb: np.ndarray, color, tol: int = 40) -> bool:
    return bool(np.any(np.all(np.abs(rgb.astype(int) - np.array(color)) <= tol, axis=-1)))


def disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.fixture
def case(rng):
    img = rng.integers(20, 90, size=(64, 64)).astype(np.uint8)
    truth = disk(64, 64, 30, 30, 14)
    img[truth] = 130
    pred = disk(64, 64, 33, 34, 13)
    return img, truth, pred


# ---------------------------------------------------------------- overlay_rgb


def test_overlay_study_colours_opaque(case):
    img, truth, pred = case
    out = overlay_rgb(img, pred, truth, alpha=1.0)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.all(out[pred & truth] == TP_COLOR)
    assert np.all(out[pred & ~truth] == FP_COLOR)
    assert np.all(out[~pred & truth] == FN_COLOR)
    tn = ~pred & ~truth
    assert np.array_equal(out[tn], np.repeat(img[tn][:, None], 3, axis=1))
    assert (pred & ~truth).any() and (~pred & truth).any()


def test_overlay_blends_and_keeps_input(case):
    img, truth, pred = case
    before = img.copy()
    out = overlay_rgb(img, pred, truth, alpha=0.5)
    assert np.array_equal(img, before)
    fp = pred & ~truth
    # blue channel pulled up, red channel pulled down relative to the gray image
    assert np.all(out[fp][:, 2] >= img[fp]) and np.all(out[fp][:, 0] <= img[fp])


@pytest.mark.parametrize("alpha", [0.65, 0.5, 0.3, 1.0])
def test_overlay_is_the_per_pixel_blend_for_gray_rgb_and_float_images(alpha):
    """The table lookups give exactly round(alpha * colour + (1 - alpha) * pixel) in float64, pixel by pixel."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    pred, truth = rng.random(img.shape) < 0.5, rng.random(img.shape) < 0.5
    want = np.repeat(img[:, :, None], 3, axis=2)
    for where, colour in ((pred & truth, TP_COLOR), (pred & ~truth, FP_COLOR), (~pred & truth, FN_COLOR)):
        px = want[where].astype(np.float64)
        want[where] = np.clip(np.rint(alpha * np.asarray(colour, np.float64) + (1 - alpha) * px), 0, 255)
    assert np.array_equal(overlay_rgb(img, pred, truth, alpha=alpha), want)
    assert np.array_equal(overlay_rgb(np.repeat(img[:, :, None], 3, axis=2), pred, truth, alpha=alpha), want)
    assert np.array_equal(overlay_rgb(img.astype(np.float32) + 0.2, pred, truth, alpha=alpha), want)


def test_overlay_without_truth_draws_outline(case):
    img, _, pred = case
    out = overlay_rgb(img, pred)
    green = np.all(out == OUTLINE_COLOR, axis=-1)
    assert green.any()
    assert not (green & ~pred).any(), "outline must lie on the prediction"
    # the interior and the background are the image, unchanged
    inner = overlay._erode(overlay._erode(pred))
    assert np.array_equal(out[inner][:, 0], img[inner])
    assert np.array_equal(out[~pred][:, 1], img[~pred])
    # an empty prediction draws nothing
    assert np.array_equal(overlay_rgb(img, np.zeros_like(pred)), np.repeat(img[:, :, None], 3, axis=2))


def test_outline_thickness_and_border():
    m = np.zeros((20, 20), bool)
    m[5:15, 5:15] = True
    assert overlay.outline(m, 1).sum() == 36
    assert overlay.outline(m, 2).sum() == 36 + 28
    full = np.ones((6, 6), bool)
    assert overlay.outline(full).sum() == 20  # the image border counts as background


def test_overlay_rejects_bad_shapes(case):
    img, truth, pred = case
    with pytest.raises(ValueError, match="prediction shape"):
        overlay_rgb(img, pred[:10])
    with pytest.raises(ValueError, match="truth shape"):
        overlay_rgb(img, pred, truth[:, :10])
    with pytest.raises(ValueError, match="image must be"):
        overlay_rgb(np.zeros((4, 4, 4, 4), np.uint8), pred)


def test_figures_import_is_light():
    code = "import sys, liverseg.apps.figures; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_save_overlay(tmp_path, case):
    img, truth, pred = case
    p = figures.save_overlay(tmp_path / "sub" / "o.png", img, pred, truth)
    rgb = np.asarray(Image.open(p).convert("RGB"))
    assert rgb.shape == (64, 64, 3)
    assert np.array_equal(rgb, overlay_rgb(img, pred, truth))


# ---------------------------------------------------------------- panels


def test_plot_panel_several_models(tmp_path, case):
    img, truth, pred = case
    preds = {"unet": pred, "baseline": np.roll(truth, 5, axis=0)}
    p = figures.plot_panel(img, truth, preds, tmp_path / "panel.png", title="slice 1")
    assert p == tmp_path / "panel.png"
    rgb = assert_png(p)
    h, w = rgb.shape[:2]
    assert w > 2.5 * h, "four columns side by side"
    assert has_color(rgb, FP_COLOR) and has_color(rgb, FN_COLOR)


def test_plot_panels_rows_and_no_truth(tmp_path, case):
    img, truth, pred = case
    data = figures.plot_panels([img, img], [truth, None], [{"a": pred}, {"a": truth}], None, row_titles=["x", "y"])
    rgb = assert_png(data)
    assert rgb.shape[0] > rgb.shape[1] * 0.5
    with pytest.raises(ValueError, match="row 1 names models"):
        figures.plot_panels([img, img], [truth, truth], [{"a": pred}, {"b": pred}], None)
    with pytest.raises(ValueError, match="at least one"):
        figures.plot_panels([], [], [], None)
    only = figures.plot_panel(img, None, {"m": pred}, None)
    assert has_color(assert_png(only), OUTLINE_COLOR, tol=10)


# ---------------------------------------------------------------- training curves


def _epochs(path: Path, n: int = 6, *, val_loss: bool = True) -> Path:
    e = np.arange(1, n + 1)
    df = pd.DataFrame(
        {
            "epoch": e,
            "mPA": 0.95 - 0.4 / e,
            "mIoU": 0.9 - 0.5 / e,
            "train_loss": 1.0 / e,
            "val_loss": (1.2 / e + 0.05) if val_loss else [""] * n,
            "dice": 0.9 - 0.6 / e,
            "iou": 0.8 - 0.6 / e,
            "precision": 0.9,
            "recall": 0.9,
            "lr": 1e-3,
            "seconds": 3.0,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def test_training_curves_single(tmp_path):
    csv = _epochs(tmp_path / "unet-w8-20250101-000000" / "epochs.csv")
    out = figures.plot_training_curves(csv, tmp_path / "fig")
    assert [p.name for p in out] == ["curves_metrics.png", "curves_loss.png"]
    for p in out:
        assert_png(p)
    # a run folder works as well as its epochs.csv
    path, df = read_epochs(csv.parent)
    assert path == csv and len(df) == 6


def test_training_curves_two_models_side_by_side(tmp_path):
    a = _epochs(tmp_path / "a" / "epochs.csv")
    b = _epochs(tmp_path / "b" / "epochs.csv", n=1, val_loss=False)  # one epoch, no validation loss
    out = figures.plot_training_curves([a, b], tmp_path / "fig", labels=["U-Net", "U-Net"])
    names = [p.name for p in out]
    assert names == [
        "curves_U-Net_metrics.png",
        "curves_U-Net_loss.png",
        "curves_U-Net-2_metrics.png",
        "curves_U-Net-2_loss.png",
        "curves_compare.png",
    ]
    sizes = {}
    for p in out:
        rgb = assert_png(p)
        sizes[p.name] = rgb.shape
    assert sizes["curves_compare.png"][1] > sizes["curves_U-Net_metrics.png"][1]


def test_training_curves_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("step,loss\n1,0.5\n")
    with pytest.raises(ValueError, match="no 'epoch' column"):
        figures.plot_training_curves(bad, tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,mPA\n")
    with pytest.raises(ValueError, match="no epochs"):
        figures.plot_training_curves(empty, tmp_path)
    with pytest.raises(ValueError, match="not found"):
        figures.plot_training_curves(tmp_path / "missing.csv", tmp_path)
    ok = _epochs(tmp_path / "ok.csv")
    with pytest.raises(ValueError, match="labels"):
        figures.plot_training_curves([ok, ok], tmp_path, labels=["one"])


# ---------------------------------------------------------------- data plots


def test_data_plots(tmp_path, rng):
    pct = list(rng.uniform(0, 20, 50)) + [0.0, 0.0]
    p = figures.plot_liver_histogram(pct, tmp_path / "h.png", title="train", max_percent=25)
    assert_png(p)
    assert_png(figures.plot_liver_histogram([], None))  # no masks still draws a labelled frame
    assert_png(figures.plot_split_bars(["train", "val", "all"], [7.0, 6.0, 6.8], [5.1, 4.7, 5.0], None))
    hists = {"a": np.bincount(rng.integers(0, 256, 4000), minlength=256), "b": np.ones(256)}
    assert_png(figures.plot_intensity_histograms(hists, None))
    assert_png(figures.plot_histogram(rng.uniform(0.6, 1.0, 30), None, xlabel="Dice", value_range=(0, 1)))


# ---------------------------------------------------------------- panels from inference runs, CLI


def _fake_run(root: Path, name: str, data: Path, shift: int, n: int = 3) -> Path:
    """A minimal inference run folder (per_image.csv + masks/) in the agreed format."""
    run = root / name
    (run / "masks").mkdir(parents=True)
    lines = ["index,input,label,output,status,error,dice"]
    for i in range(n):
        truth = np.asarray(Image.open(data / f"m{i}.png")) > 127
        pred = np.roll(truth, shift * (i + 1), axis=1)
        Image.fromarray(pred.astype(np.uint8) * 255).save(run / "masks" / f"s{i}_pred.png")
        dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
        lines.append(f"{i},{data / f's{i}.png'},{data / f'm{i}.png'},masks/s{i}_pred.png,ok,,{dice:.6f}")
    lines.append(f"{n},{data / 'gone.png'},,,failed,not readable,")
    (run / "per_image.csv").write_text("\n".join(lines) + "\n")
    return run


def test_panel_from_runs_and_cli(tmp_path, rng):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        img = rng.integers(0, 80, (48, 48)).astype(np.uint8)
        m = disk(48, 48, 24, 20 + 3 * i, 10)
        img[m] = 130
        Image.fromarray(img).save(data / f"s{i}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(data / f"m{i}.png")
    a = _fake_run(tmp_path, "run-a", data, 1)
    b = _fake_run(tmp_path, "run-b", data, 3)
    p = figures.panel_from_runs([a, b], tmp_path / "auto.png", n_auto=2)
    rgb = assert_png(p)
    assert rgb.shape[1] > rgb.shape[0]  # 2 rows of 4 columns
    assert has_color(rgb, FP_COLOR) and has_color(rgb, FN_COLOR)
    with pytest.raises(ValueError, match="no processed input named 'gone'"):
        figures.panel_from_runs([a, b], tmp_path / "x.png", stems=["gone"])
    with pytest.raises(ValueError, match="names"):
        figures.panel_from_runs([a, b], tmp_path / "x.png", names=["only one"])

    from click.testing import CliRunner

    res = CliRunner().invoke(
        figures.main,
        ["panel", str(a), str(b), "--image", "s1", "--name", "A", "--name", "B", "--out", str(tmp_path / "cli.png")],
    )
    assert res.exit_code == 0, res.output
    assert_png(tmp_path / "cli.png")
    res = CliRunner().invoke(figures.main, ["panel", str(tmp_path / "data")])
    assert res.exit_code == 2 and "no per_image.csv" in res.output
    csv = _epochs(tmp_path / "r1" / "epochs.csv", n=3)
    res = CliRunner().invoke(figures.main, ["curves", str(csv), "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c" / "curves_loss.png").exists()
    res = CliRunner().invoke(figures.main, ["curves", str(data / "s0.png")])
    assert res.exit_code == 2


@pytest.mark.realdata
def test_curves_draw_the_studys_own_results_beside_a_liverseg_run(study_seed, tmp_path):
    """The study's metric_values.csv (unnamed index = epoch - 1) reads as epochs 1..n and draws beside epochs.csv."""
    from click.testing import CliRunner

    study = study_seed / "results" / "metrics__metric_values_unet.csv"
    path, df = read_epochs(study)
    raw = study.read_text().splitlines()
    assert raw[0].startswith(",mPA,mIoU") and raw[1].startswith("0,")
    assert df["epoch"].tolist() == list(range(1, 11))
    assert df["mIoU"].iloc[0] == pytest.approx(float(raw[1].split(",")[2]))
    ours = _epochs(tmp_path / "unet-w8-20250101-000000" / "epochs.csv")
    res = CliRunner().invoke(figures.main, ["curves", str(study), str(ours), "--out", str(tmp_path / "fig")])
    assert res.exit_code == 0, res.output
    assert_png(tmp_path / "fig" / "curves_compare.png")
    assert_png(tmp_path / "fig" / "curves_metrics__metric_values_unet_metrics.png")


def test_the_studys_one_percent_categories():
    assert figures.STUDY_CATEGORIES[0] == "<1%" and figures.STUDY_CATEGORIES[1] == "1-2%"
    assert figures.STUDY_CATEGORIES[-2:] == ["18-19%", ">19%"] and len(figures.STUDY_CATEGORIES) == 20
    counts = figures.study_categories([0.0, 0.99, 1.0, 1.5, 2.0, 18.99, 19.0, 42.0, float("nan")])
    assert counts[0] == 2 and counts[1] == 2 and counts[2] == 1 and counts[18] == 1 and counts[19] == 2
    assert sum(counts) == 8
    assert_png(figures.plot_liver_histogram([0.5, 3.2, 25.0], None, categories=True))
