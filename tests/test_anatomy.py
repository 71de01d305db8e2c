"""Where a liver can be: the anatomy rule on synthetic CT, and the shipped model on real scans without liver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from liverseg.predict.anatomy import MIN_LIVER_ML, landmarks, plausible_liver

SPACING = (2.0, 2.0, 2.0)  # (slice, row, col) mm


def torso(k: int = 80, size: int = 96, lungs: tuple[int, int] | None = (45, 80), gas: bool = False) -> np.ndarray:
    """An axial HU volume [K, R, C], inferior -> superior: body of soft tissue in air, lungs from ``lungs``."""
    hu = np.full((k, size, size), -1000, dtype=np.int16)
    hu[:, 10:86, 8:88] = 40  # the body, not touching the border
    if lungs is not None:
        lo, hi = lungs
        rng = np.random.default_rng(0)
        lung = rng.normal(-850, 40, size=(hi - lo, 50, 30)).astype(np.int16)  # lung tissue: about -850 HU
        hu[lo:hi, 20:70, 14:44] = lung  # the patient's right lung (the viewer's left)
        hu[lo:hi, 20:70, 52:82] = lung
    if gas:
        hu[5:40, 50:75, 55:80] = -1000  # a gas-filled bowel loop: below -950 HU
    return hu


def blob(mask: np.ndarray, z: slice, r: slice, c: slice) -> None:
    mask[z, r, c] = True


def ml(mask: np.ndarray) -> float:
    return float(mask.sum() * np.prod(SPACING)) / 1000.0


def test_landmarks_find_the_lungs_and_not_the_gas_in_the_bowel():
    marks = landmarks(torso(gas=True), SPACING)
    assert marks.has_lungs
    assert marks.lung_mm2[:45].max() == 0  # the bowel gas below is not taken for a lung
    assert marks.lung_mm2[50] > 0
    assert 55 < marks.lung_centre < 70
    assert np.nanmean(marks.body_col) == pytest.approx(47.5, abs=3)


def test_the_liver_below_the_right_lung_is_kept_and_a_region_above_the_lungs_is_not():
    hu = torso()
    mask = np.zeros(hu.shape, dtype=bool)
    blob(mask, slice(25, 50), slice(25, 70), slice(12, 45))  # under the right lung: the liver
    blob(mask, slice(66, 80), slice(20, 75), slice(10, 85))  # larger, above the lungs' centre: neck, shoulders
    out, removed, note = plausible_liver(mask, SPACING, landmarks(hu, SPACING))
    assert out[25:50].sum() == mask[25:50].sum()
    assert not out[66:].any()
    assert removed == mask[66:].sum()
    assert note is not None and "above the lungs' centre" in note


def test_a_region_between_the_lungs_is_refused():
    hu = torso()
    mask = np.zeros(hu.shape, dtype=bool)
    blob(mask, slice(50, 62), slice(30, 60), slice(40, 52))  # the heart, between the lungs where they are largest
    out, _, note = plausible_liver(mask, SPACING, landmarks(hu, SPACING))
    assert not out.any()
    assert note is not None and note.startswith("no liver") and "between the lungs" in note


def test_without_lungs_the_largest_region_on_the_patients_right_is_kept():
    hu = torso(lungs=None)
    mask = np.zeros(hu.shape, dtype=bool)
    blob(mask, slice(10, 40), slice(25, 70), slice(55, 85))  # larger, but on the patient's left (the spleen side)
    blob(mask, slice(40, 60), slice(25, 70), slice(12, 40))
    out, _, note = plausible_liver(mask, SPACING, landmarks(hu, SPACING))
    assert out[40:60].sum() == mask[40:60].sum() and not out[10:40].any()
    assert note is not None and "on the patient's left" in note


def test_small_regions_are_no_liver_and_an_empty_mask_stays_empty():
    mask = np.zeros((20, 40, 40), dtype=bool)
    blob(mask, slice(5, 8), slice(10, 20), slice(5, 15))
    assert ml(mask) < MIN_LIVER_ML
    out, removed, note = plausible_liver(mask, SPACING, None)
    assert not out.any() and removed == mask.sum() and note is not None and "under" in note
    empty = np.zeros((4, 8, 8), dtype=bool)
    out, removed, note = plausible_liver(empty, SPACING, None)
    assert not out.any() and removed == 0 and note is None


def test_block_grouping_keeps_every_voxel_of_the_kept_region_at_odd_sizes():
    mask = np.zeros((30, 101, 77), dtype=bool)
    blob(mask, slice(3, 25), slice(40, 100), slice(2, 40))
    blob(mask, slice(1, 3), slice(0, 2), slice(70, 77))  # a speck at the far edges, in partial blocks
    out, removed, _ = plausible_liver(mask, (1.0, 0.7, 0.7), None)
    assert out[3:25].sum() == mask[3:25].sum()
    assert removed == mask[1:3].sum() and not out[1:3].any()


def test_the_api_applies_the_rule_to_volumes_unless_told_not_to(monkeypatch):
    import liverseg
    import liverseg.predict.predictor as anatomy  # where the predictor looks the rule up

    calls = []

    def everything_refused(mask, spacing, marks, in_place=False):
        calls.append(marks)
        return np.zeros_like(mask, dtype=bool), int(mask.sum()), "no liver: test"

    monkeypatch.setattr(anatomy, "plausible_liver", everything_refused)
    hu = torso()
    hu[20:40, 30:60, 15:40] = 120  # a bright region under the right lung, so that the model may find something
    with liverseg.Segmenter(device="cpu") as seg:
        off = seg.segment(hu, spacing=SPACING, anatomy=False)
        assert calls == []
        on = seg.segment(hu, spacing=SPACING)
    assert on.shape == off.shape == hu.shape
    assert off.any(), "the model must find something for this test to mean anything"
    assert len(calls) == 1 and calls[0] is not None and calls[0].has_lungs  # the rule ran on the model's mask
    assert not on.any()  # and its answer is what the API returns


def test_a_solid_liver_bridges_a_missed_slice_and_fills_a_hole_but_reaches_nothing_else():
    from liverseg.predict.anatomy import solid_liver

    mask = np.zeros((12, 40, 40), dtype=bool)
    mask[2:10, 10:30, 10:30] = True
    mask[6, 10:30, 10:22] = False  # a slice where the model missed most of it, as near the dome
    mask[4, 18:22, 18:22] = False  # a vessel enclosed by liver
    far = np.zeros_like(mask)
    far[2:10, 36:40, 0:4] = True  # another region, beyond the closing's reach
    both = mask | far
    want = np.zeros_like(mask)
    want[2:10, 10:30, 10:30] = True
    before = both.copy()
    added = solid_liver(both, (2.0, 1.0, 1.0), close_mm=2.0)  # one iteration at 2 mm slices
    assert added == int(both.sum() - before.sum()) > 0 and (both >= before).all()
    assert both[6, 11:29, 11:22].all() and both[4, 18:22, 18:22].all()  # the missed slice's inside, the vessel
    assert not (both & ~(want | far)).any()  # within the liver's hull: nothing grown outward
    np.testing.assert_array_equal(both & ~want, far)  # the other region neither grew nor was joined
    empty = np.zeros_like(mask)
    assert solid_liver(empty, (2.0, 1.0, 1.0)) == 0 and not empty.any()


# ---- real scans -------------------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.slow
def test_the_shipped_model_finds_no_liver_in_a_head_and_neck_ct(shipped, shared_data: Path):
    from liverseg.benchmarks.scans import no_liver_scan

    row = no_liver_scan(shipped, shared_data)
    assert row["liver_ml"] < 5.0, row


@pytest.mark.realdata
@pytest.mark.slow
def test_the_shipped_model_keeps_the_pelvis_of_an_abdomen_pelvis_ct_free_of_liver(shipped, shared_data: Path):
    from liverseg.benchmarks.scans import totalseg_example

    row = totalseg_example(shipped, shared_data)
    assert row["liver_ml_more_than_5cm_below"] < 5.0, row
    assert row["dice_top_30_slices_vs_pseudo_labels"] > 0.9, row


@pytest.mark.realdata
@pytest.mark.slow
def test_the_shipped_model_on_a_whole_abdominal_ct_never_trained_on(shared_data: Path):
    """The issue's target, 3D Dice 0.95 and HD95 10 mm, on ONNX Runtime fp32: the int8 engines ``auto`` takes
    differ by CPU class in the fourth decimal (0.9500 on an AVX2 CPU, MODEL_CARD.md), fp32 does not."""
    import liverseg
    from liverseg.benchmarks.scans import ircadb

    with liverseg.Segmenter(device="cpu", engine="onnxruntime", precision="fp32") as seg:
        row = ircadb(seg, shared_data)
    assert row["dice"] >= 0.95 and row["hd95_mm"] <= 10.0, row  # measured 0.9503 / 9.6 mm


def test_liverseg_infer_applies_the_rule_by_default_and_records_it(monkeypatch, tmp_path):
    import json

    import nibabel as nib
    import pandas as pd

    import liverseg.predict.predictor as anatomy  # where the predictor looks the rule up
    from liverseg.infer.runner import Options, run_inference

    seen = []

    def refuse(mask, spacing, marks, in_place=False):
        seen.append(marks)
        return np.zeros_like(mask, dtype=bool), int(mask.sum()), "no liver: test"

    monkeypatch.setattr(anatomy, "plausible_liver", refuse)
    monkeypatch.setattr(anatomy, "landmarks", lambda hu, spacing, offset=0.0: ("marks", offset))
    monkeypatch.setattr(anatomy, "on_the_left_mm", lambda mask, marks, spacing: None)
    hu = torso()
    hu[20:40, 30:60, 15:40] = 120
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), np.diag([-2.0, -2.0, 2.0, 1.0])), path)

    def run(name: str, **kw: Any) -> dict:
        res = run_inference(Options(source=path, out=tmp_path / name, progress=False, report=False, **kw))
        assert res.exit_code == 0
        row = pd.read_csv(tmp_path / name / "per_volume.csv", keep_default_na=False).iloc[0].to_dict()
        row["post"] = json.loads((tmp_path / name / "summary.json").read_text())["postprocessing"]
        return row

    off = run("off", anatomy=False)
    assert seen == [] and off["post"]["anatomy"] is False
    on = run("on")
    assert on["post"]["anatomy"] is True
    assert float(off["volume_ml"]) > 0, "the model must find something for this test to mean anything"
    assert seen == [("marks", 0.0)]  # landmarks from the HU voxels reach the rule
    assert float(on["volume_ml"]) == 0.0 and "no liver" in on["notes"]


# ---- 8-bit slices in other windows ------------------------------------------------------------------------


def _hu_slice(rng: np.random.Generator) -> np.ndarray:
    hu = np.full((128, 128), -1000.0, np.float32)
    yy, xx = np.mgrid[:128, :128]
    body = ((yy - 64) / 50) ** 2 + ((xx - 64) / 56) ** 2 < 1
    inner = ((yy - 64) / 42) ** 2 + ((xx - 64) / 48) ** 2 < 1
    hu[body] = -100  # subcutaneous fat
    hu[inner] = 50  # soft tissue
    hu[(yy - 60) ** 2 + (xx - 40) ** 2 < 20**2] = 110  # an enhanced liver
    return hu + rng.normal(0, 12, hu.shape).astype(np.float32)


def test_a_wide_window_slice_is_stretched_and_a_contract_window_slice_is_not(rng):
    from liverseg.core.intensity import restretch, window_to_gray

    hu = _hu_slice(rng)
    standard = window_to_gray(hu, "hu", (0.0, 255.0), "s")
    same, note = restretch(standard)
    assert note is None and same is standard
    wide = window_to_gray(hu, "hu", (-1000.0, 760.0), "w")
    out, note = restretch(wide)
    assert note is not None and "wide window" in note
    liver, tissue = out[60, 40], out[64, 90]
    assert int(liver) - int(tissue) > 3 * (int(wide[60, 40]) - int(wide[64, 90]))  # contrast given back
    assert out[0, 0] == 80  # the air a gray background


@pytest.mark.realdata
def test_no_slice_of_the_png_sets_is_stretched(shared_data: Path):
    from PIL import Image

    from liverseg.core.intensity import restretch

    files = sorted((shared_data / "msd-liver-256" / "images").glob("*.png"))
    files += sorted((shared_data / "chaos-ct-case" / "images").glob("*.png"))
    assert len(files) > 600
    stretched = [f.name for f in files if restretch(np.asarray(Image.open(f).convert("L")))[1] is not None]
    assert stretched == []


@pytest.mark.realdata
@pytest.mark.slow
def test_the_shipped_model_on_ircadb_17_slices_exported_in_other_windows(shipped, shared_data: Path):
    from liverseg.benchmarks.scans import windows

    rows = windows(shipped, shared_data)
    bad = {name: r["dice_pooled"] for name, r in rows.items() if r["dice_pooled"] < 0.90}
    assert bad == {}, rows


@pytest.mark.parametrize("values", [(0,), (0, 120), (30, 200, 201)])
def test_restretch_leaves_images_of_a_few_values_alone(values):
    from liverseg.core.intensity import restretch

    img = np.array(values * (400 // len(values) + 1), np.uint8)[:400].reshape(20, 20)
    out, note = restretch(img)
    assert note is None and out is img
