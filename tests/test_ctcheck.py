"""Inputs that are not CT are refused with their reason; the batch goes on; --allow-non-ct accepts them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from liverseg.core.ctcheck import colour_problem, ct_numbers_problem, label_map_problem
from liverseg.core.errors import DataError


def ct_slice(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """An 8-bit CT-like slice in the PNG sets' window: air and fat 0, a body of noisy soft tissue."""
    img = np.zeros((size, size), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) / (size * 0.4)) ** 2 + ((xx - size / 2) / (size * 0.45)) ** 2 < 1
    img[body] = np.clip(rng.normal(110, 25, size=int(body.sum())), 0, 255).astype(np.uint8)
    return img


def hu_volume(rng: np.random.Generator, k: int = 12, size: int = 64) -> np.ndarray:
    """int16 HU [I, J, K]: air around a body of fat and soft tissue."""
    hu = np.full((size, size, k), -1000, dtype=np.int16)
    hu[8:56, 8:56, :] = rng.normal(40, 30, size=(48, 48, k)).astype(np.int16)
    hu[8:14, 8:56, :] = -100
    return hu


def test_rules_on_arrays(rng):
    gray = ct_slice(rng)
    assert label_map_problem(gray) is None
    assert label_map_problem(np.zeros((8, 8), np.uint8)) is None  # blank: a slice without contrast, not a mask
    assert "2 distinct values (0, 255)" in (label_map_problem((gray > 100).astype(np.uint8) * 255) or "")
    rgb_gray = np.repeat(gray[..., None], 3, axis=2)
    assert colour_problem(rgb_gray) is None
    shot = np.full((100, 100, 3), 255, np.uint8)
    shot[10:40, :, :] = (30, 90, 200)  # a blue banner
    assert "colour image" in (colour_problem(shot) or "")
    mr = rng.uniform(100, 900, size=(32, 32)).astype(np.float32) - 1024  # an MR volume read as HU+1024
    assert "not CT" in (ct_numbers_problem(mr) or "")
    assert ct_numbers_problem(hu_volume(rng).astype(np.float32)) is None


def _run(src: Path, out: Path, **kw):
    from liverseg.infer.runner import Options, run_inference

    res = run_inference(Options(source=src, out=out, progress=False, report=False, **kw))
    rows = pd.read_csv(out / "per_image.csv", dtype=str, keep_default_na=False)
    return res.exit_code, rows


def test_a_screenshot_and_a_mask_in_a_folder_of_slices_fail_and_the_rest_go_on(rng, tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(ct_slice(rng)).save(folder / f"ct{i}.png")
    Image.fromarray(np.repeat(ct_slice(rng)[..., None], 3, axis=2)).save(folder / "rgb_gray.png")  # the study's RGB
    shot = np.full((120, 160, 3), 245, np.uint8)
    shot[:24] = (40, 110, 220)
    shot[60:70, 20:140] = (220, 40, 40)
    Image.fromarray(shot).save(folder / "screenshot.png")
    Image.fromarray((ct_slice(rng) > 100).astype(np.uint8) * 255).save(folder / "mask.png")
    code, rows = _run(folder, tmp_path / "out")
    assert code == 1
    by = {Path(r["input"]).name: r for r in rows.to_dict("records")}
    assert by["screenshot.png"]["status"] == "failed" and "colour image" in by["screenshot.png"]["error"]
    assert "screenshot.png" in by["screenshot.png"]["error"] and "--allow-non-ct" in by["screenshot.png"]["error"]
    assert by["mask.png"]["status"] == "failed" and "label map or mask" in by["mask.png"]["error"]
    assert all(by[n]["status"] == "ok" for n in ("ct0.png", "ct1.png", "rgb_gray.png"))
    code, rows = _run(folder, tmp_path / "allowed", allow_non_ct=True)
    assert code == 0 and set(rows["status"]) == {"ok"}


def test_a_label_map_and_an_mr_like_volume_fail_beside_a_ct(rng, tmp_path):
    import nibabel as nib

    aff = np.diag([-1.5, -1.5, 2.0, 1.0])
    ct = hu_volume(rng)
    nib.save(nib.Nifti1Image(ct, aff), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image((ct > 30).astype(np.uint8), aff), tmp_path / "labels.nii.gz")
    mr = np.zeros(ct.shape, np.uint16)
    mr[8:56, 8:56, :] = rng.uniform(150, 900, size=(48, 48, ct.shape[2])).astype(np.uint16)
    nib.save(nib.Nifti1Image(mr, aff), tmp_path / "t1.nii.gz")
    (tmp_path / "list.csv").write_text("X\nct.nii.gz\nlabels.nii.gz\nt1.nii.gz\n")
    code, rows = _run(tmp_path / "list.csv", tmp_path / "out", data_root=tmp_path)
    assert code == 1
    by = {Path(r["input"]).name: r for r in rows.to_dict("records")}
    assert by["ct.nii.gz"]["status"] == "ok"
    assert by["labels.nii.gz"]["status"] == "failed" and "label map or mask" in by["labels.nii.gz"]["error"]
    assert by["t1.nii.gz"]["status"] == "failed" and "MR or other data" in by["t1.nii.gz"]["error"]


def test_the_api_refuses_a_label_map_unless_allowed(rng):
    import liverseg

    labels = (hu_volume(rng) > 30).astype(np.uint8).transpose(2, 1, 0)
    with liverseg.Segmenter(device="cpu") as seg:
        with pytest.raises(DataError, match="label map or mask"):
            seg.segment(labels, spacing=(2.0, 1.5, 1.5))
        mask = seg.segment(labels, spacing=(2.0, 1.5, 1.5), allow_non_ct=True)
    assert mask.shape == labels.shape


@pytest.mark.realdata
def test_the_expert_label_of_ircadb_17_given_as_the_ct_is_refused(shared_data, tmp_path):
    label = shared_data / "ircadb-17" / "liver.nii.gz"
    code, rows = _run(label, tmp_path / "out")
    assert code == 1
    assert "2 distinct values (0, 1): a label map or mask" in rows.loc[0, "error"]
