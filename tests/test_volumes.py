"""liverseg-infer on CT volumes: NIfTI/NRRD/DICOM in, NIfTI/DICOM-SEG out, spacing, windowing, metrics, bad input.

Models are width-4 U-Nets (random weights: the tests compare paths with each other,
never with a quality bar). Synthetic volumes are written in the test; the real-data
tests read ../shared/data in place (lits-117, the CHAOS DICOM series and its PNGs).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from liverseg.core.images import read_mask
from liverseg.infer.runner import Options, run_inference

pytest.importorskip("pydicom")
pytest.importorskip("scipy")

from liverseg.apps.dicom_synth import write_series  # noqa: E402


def _model(tmp: Path, spacing: float | None, window: tuple[float, float] | None = None) -> Path:
    import torch

    from liverseg.checkpoint import Checkpoint
    from liverseg.core.preprocess import Preprocessing
    from liverseg.export.onnx import export_onnx
    from liverseg.models import create_model

    torch.manual_seed(0)
    args = {"in_channels": 1, "out_channels": 1, "width": 4}
    net = create_model("unet", **args)
    ckpt = Checkpoint("unet", args, Preprocessing(), {k: v.clone() for k, v in net.state_dict().items()})
    ckpt.config = {"pixel_spacing_mm": spacing, **({"window_hu": list(window)} if window else {})}
    return export_onnx(ckpt, tmp / f"model_{spacing}.onnx", example_shape=(1, 1, 64, 64))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A model that records no training spacing (inputs used at their own)."""
    return _model(tmp_path_factory.mktemp("m"), None)


@pytest.fixture(scope="module")
def model_1mm(tmp_path_factory) -> Path:
    """A model trained at 1.4 mm pixels: every input is resampled to it and back."""
    return _model(tmp_path_factory.mktemp("m"), 1.4)


def _phantom(shape=(40, 48, 12), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """(int16 HU [I, J, K], bool liver) : air, a body of fat and soft tissue, a brighter ellipsoid 'liver'."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    body = ((i - shape[0] / 2) / (shape[0] * 0.45)) ** 2 + ((j - shape[1] / 2) / (shape[1] * 0.45)) ** 2 < 1
    liver = ((i - shape[0] * 0.4) / 8) ** 2 + ((j - shape[1] * 0.45) / 10) ** 2 + ((k - shape[2] / 2) / 5) ** 2 < 1
    hu = np.where(body, 20, -1000) + rng.normal(0, 10, shape)
    hu[liver] = 120 + rng.normal(0, 10, int(liver.sum()))
    return np.rint(hu).astype(np.int16), liver


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


AFFINE = np.array([[-0.8, 0, 0, 100.0], [0, -0.8, 0, 80.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])


def _nii(path: str) -> Any:
    """nibabel's image (typed loosely: ``nib.load`` is annotated as the base image class)."""
    return nib.load(path)


def _run(tmp: Path, source: Path, model: Path, **kw: Any) -> tuple[int, Any, Path, list[dict[Any, Any]]]:
    kw.setdefault("report", False)
    # these tests check geometry and files against 2D runs with tiny models on phantoms: the anatomy rule,
    # on by default, is tested in test_anatomy.py
    kw.setdefault("anatomy", False)
    logs: list[str] = []
    opts = Options(source=source, model=model, out=kw.pop("out", tmp / "out"), progress=False, **kw)
    res = run_inference(opts, log=logs.append)
    rows: list[dict[Any, Any]] = []
    if res.out_dir is not None and (res.out_dir / "per_volume.csv").exists():
        rows = pd.read_csv(res.out_dir / "per_volume.csv", dtype=str, keep_default_na=False).to_dict("records")
    if res.summary is not None:
        res.summary["_logs"] = logs
    elif res.exit_code == 2:
        rows = [{"message": res.message}]
    return res.exit_code, res.summary, res.out_dir or tmp, rows


# ---------------------------------------------------------------- NIfTI in, NIfTI out


def test_nifti_mask_has_the_input_shape_affine_and_metrics(tmp_path, model):
    hu, liver = _phantom()
    vol = _nifti(tmp_path / "case.nii.gz", hu, AFFINE)
    lab = _nifti(tmp_path / "case_seg.nii.gz", liver.astype(np.uint8), AFFINE)
    code, s, out, rows = _run(tmp_path, vol, model, labels=lab, overlays=True)
    assert code == 0, s["failed"]
    mask = _nii(str(out / "masks/case.nii.gz"))
    assert mask.shape == hu.shape and np.allclose(mask.affine, AFFINE)
    assert mask.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    row = rows[0]
    for col in ("dice", "iou", "hd95_mm", "assd_mm", "nsd_2mm", "volume_ml", "volume_ml_true"):
        assert col in row
    true_ml = liver.sum() * 0.8 * 0.8 * 2.5 / 1000
    assert float(row["volume_ml_true"]) == pytest.approx(true_ml)
    assert float(row["volume_ml"]) == pytest.approx(np.asarray(mask.dataobj).sum() * 1.6 / 1000)
    assert s["volume_metrics"]["n_labelled"] == 1
    assert row["spacing_mm"] == "0.8x0.8x2.5"
    assert (out / "slices/case.csv").is_file() and (out / "overlays/case_coronal.png").is_file()
    per_slice = pd.read_csv(out / "slices/case.csv")
    assert len(per_slice) == hu.shape[2] and per_slice["true_pixels"].sum() == liver.sum()


@pytest.mark.parametrize("fixture", ["model", "model_1mm"])
def test_probability_volume_thresholds_to_the_mask(tmp_path, fixture, request):
    """--save-probabilities writes a float32 volume on the input grid whose threshold is the mask (resampled too)."""
    hu, _ = _phantom()
    vol = _nifti(tmp_path / "case.nii.gz", hu, AFFINE)
    code, s, out, _ = _run(tmp_path, vol, request.getfixturevalue(fixture), save_probabilities=True)
    assert code == 0, s["failed"]
    prob, mask = _nii(str(out / "probabilities/case_prob.nii.gz")), _nii(str(out / "masks/case.nii.gz"))
    assert prob.shape == hu.shape and np.allclose(prob.affine, AFFINE) and prob.get_data_dtype() == np.float32
    p = np.asarray(prob.dataobj)
    assert 0.0 <= p.min() and p.max() <= 1.0
    assert np.array_equal(p > 0.5, np.asarray(mask.dataobj) == 1)


def test_report_has_a_volume_section_without_overlays_asked_for(tmp_path, model):
    """report.html opens with the volume's findings, then its viewer and per-slice profile; 2D cases stay 2D."""
    hu, liver = _phantom()
    vol = _nifti(tmp_path / "case.nii.gz", hu, AFFINE)
    lab = _nifti(tmp_path / "case_seg.nii.gz", liver.astype(np.uint8), AFFINE)
    code, s, out, rows = _run(tmp_path, vol, model, labels=lab, report=True)
    assert code == 0, s["failed"]
    html = (out / "report.html").read_text()
    assert "<h2>Volumes (1)</h2>" in html and '<h2 class="volume">case.nii.gz</h2>' in html
    assert "HD95 mm" in html and "liver pixels and Dice per slice" in html
    dice = f"{float(rows[0]['dice']):.4f}"
    assert dice in html
    # findings first, then the viewer (every slice), the engine and speed last in volumes / s
    findings, viewer, run = html.index(dice), html.index('class="lsv"'), html.index("Run: engine, device and speed")
    assert findings < viewer < run and "volumes / s, end to end" in html and "images / s" not in html
    assert f'max="{hu.shape[2] - 1}"' in html and (out / "overlays/case_viewer.json").is_file()
    # the 2D sections (which read images and PNG masks) leave the volume alone
    assert "<h2>Accuracy</h2>" not in html and "<h2>Predictions</h2>" not in html


def test_orientation_round_trip_and_model_view(tmp_path, model):
    """A volume stored flipped and permuted gives the same mask, in its own order, as the plain one."""
    hu, liver = _phantom()
    a = _run(tmp_path / "a", _nifti(tmp_path / "a.nii.gz", hu, AFFINE), model)
    # the same voxels, axes permuted and the first flipped, with the affine that keeps them in place
    perm = np.transpose(hu, (2, 0, 1))[::-1]
    aff = AFFINE[:, [2, 0, 1, 3]].copy()
    aff[:, 3] = AFFINE @ np.array([0, 0, hu.shape[2] - 1, 1])
    aff[:3, 0] *= -1
    b = _run(tmp_path / "b", _nifti(tmp_path / "b.nii.gz", np.ascontiguousarray(perm), aff), model)
    ma = np.asarray(_nii(str(a[2] / "masks/a.nii.gz")).dataobj)
    mb = np.asarray(_nii(str(b[2] / "masks/b.nii.gz")).dataobj)
    assert mb.shape == perm.shape
    assert np.array_equal(np.transpose(ma, (2, 0, 1))[::-1], mb)


@pytest.mark.parametrize("kind", ["int16", "scaled uint16", "nifti2", "plain .nii"])
def test_nifti_voxels_inflated_by_zlib_ng_are_nibabels(tmp_path, monkeypatch, kind):
    """.nii.gz voxels come through zlib-ng exactly as nibabel gives them (scaling and NIfTI-2 included)."""
    import liverseg.core.volume as vol_mod

    rng = np.random.default_rng(3)
    hu = rng.integers(-1000, 1500, (40, 30, 7)).astype(np.int16)
    img: Any = nib.Nifti1Image(hu, AFFINE)
    if kind == "scaled uint16":
        img = nib.Nifti1Image((hu + 1024).astype(np.uint16), AFFINE)
        img.header.set_slope_inter(1.0, -1024.0)
    elif kind == "nifti2":
        img = nib.Nifti2Image(hu, AFFINE)
    path = tmp_path / ("v.nii" if kind == "plain .nii" else "v.nii.gz")
    nib.save(img, str(path))
    want = np.asanyarray(_nii(str(path)).dataobj)
    fast = vol_mod._gzip_ng_data(nib.load(str(path)), path)
    assert (fast is None) == (kind == "plain .nii")
    if fast is not None:
        assert fast.dtype == want.dtype and np.array_equal(fast, want)
    assert np.array_equal(vol_mod.read_volume(path).data, want)


def test_a_truncated_nifti_gz_is_refused_naming_it_and_written_masks_are_gzip(tmp_path):
    import liverseg.core.volume as vol_mod

    hu = np.random.default_rng(4).integers(-1000, 1500, (64, 64, 16)).astype(np.int16)
    whole = tmp_path / "whole.nii.gz"
    nib.save(nib.Nifti1Image(hu, AFFINE), str(whole))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(vol_mod.DataError, match=r"cut\.nii\.gz: NIfTI data cannot be read"):
        vol_mod.read_volume(cut)
    like = vol_mod.read_volume(whole)
    mask = (hu > 0).astype(np.uint8)
    out = tmp_path / "m.nii.gz"
    vol_mod.write_nifti(out, mask, like, fsync=False)
    with gzip.open(out) as f:  # the standard library reads what zlib-ng wrote
        assert f.read(4) == (348).to_bytes(4, "little")
    assert np.array_equal(np.asanyarray(_nii(str(out)).dataobj), mask)


def test_nrrd_and_metaimage_read_like_nifti(tmp_path, model):
    sitk = pytest.importorskip("SimpleITK")
    hu, _ = _phantom()
    a = _run(tmp_path / "n", _nifti(tmp_path / "v.nii.gz", hu, AFFINE), model)
    ref = np.asarray(_nii(str(a[2] / "masks/v.nii.gz")).dataobj)
    img = sitk.GetImageFromArray(np.ascontiguousarray(hu.transpose(2, 1, 0)))  # ITK arrays are [z, y, x]
    img.SetSpacing((0.8, 0.8, 2.5))
    img.SetOrigin((-100.0, -80.0, -30.0))  # LPS of the NIfTI's RAS origin (100, 80, -30)
    for ext in (".nrrd", ".mha"):
        path = tmp_path / f"v{ext}"
        sitk.WriteImage(img, str(path))
        code, s, out, rows = _run(tmp_path / ext[1:], path, model)
        assert code == 0, s["failed"]
        got = _nii(str(out / "masks/v.nii.gz"))
        assert np.allclose(got.affine, AFFINE), ext
        assert np.array_equal(np.asarray(got.dataobj), ref), ext


def test_resampling_to_the_model_spacing_keeps_the_input_grid(tmp_path, model_1mm):
    hu, _ = _phantom()
    code, s, out, rows = _run(tmp_path, _nifti(tmp_path / "v.nii.gz", hu, AFFINE), model_1mm)
    assert code == 0, s["failed"]
    assert rows[0]["model_grid"] == f"{round(48 * 0.8 / 1.4)}x{round(40 * 0.8 / 1.4)}"
    assert _nii(str(out / "masks/v.nii.gz")).shape == hu.shape
    assert s["preprocessing"]["model_pixel_spacing_mm"] == 1.4


def test_identity_affine_is_processed_with_a_stated_assumption(tmp_path, model):
    hu, _ = _phantom()
    code, s, out, rows = _run(tmp_path, _nifti(tmp_path / "v.nii.gz", hu, np.eye(4)), model)
    assert code == 0
    assert "identity affine" in rows[0]["notes"] and "assumed 1 mm pixels" in rows[0]["notes"]
    assert any("identity affine" in line for line in s["_logs"])


def test_window_comes_from_the_contract_and_can_be_overridden(tmp_path):
    hu, _ = _phantom()
    m = _model(tmp_path, None, window=(-100.0, 200.0))
    vol = _nifti(tmp_path / "v.nii.gz", hu, AFFINE)
    code, s, out, _ = _run(tmp_path / "a", vol, m)
    assert s["preprocessing"]["window_hu"] == [-100.0, 200.0]
    code, s, out, _ = _run(tmp_path / "b", vol, m, window=(0.0, 255.0))
    assert s["preprocessing"]["window_hu"] == [0.0, 255.0] and s["preprocessing"]["window_from"] == "--window"


def test_cleanup_is_recorded(tmp_path, model):
    hu, _ = _phantom()
    code, s, out, rows = _run(tmp_path, _nifti(tmp_path / "v.nii.gz", hu, AFFINE), model, largest_component=True)
    assert code == 0
    mask = np.asarray(_nii(str(out / "masks/v.nii.gz")).dataobj)
    from scipy import ndimage

    assert ndimage.label(mask)[1] <= 1
    assert s["postprocessing"]["largest_component"] is True
    assert int(rows[0]["removed_voxels"]) == s["removed_voxels"]


# ---------------------------------------------------------------- bad input never sinks the batch


def test_bad_volumes_fail_alone_and_the_batch_goes_on(tmp_path, model):
    hu, _ = _phantom()
    good = _nifti(tmp_path / "good.nii.gz", hu, AFFINE)
    four_d = _nifti(tmp_path / "fourd.nii.gz", np.stack([hu, hu], -1), AFFINE)
    raw = gzip.compress(nib.Nifti1Image(hu, AFFINE).to_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    mr = np.abs(hu).astype(np.int16)  # no air: not CT numbers
    mri = _nifti(tmp_path / "mr.nii.gz", mr, AFFINE)
    dcm = tmp_path / "mr_series"
    write_series(dcm, np.transpose(hu, (2, 1, 0))[:4], modality="MR")
    (tmp_path / "list.csv").write_text(
        "X\n" + "\n".join(str(p) for p in (four_d, tmp_path / "cut.nii.gz", mri, dcm, good)) + "\n"
    )
    code, s, out, rows = _run(tmp_path, tmp_path / "list.csv", model)
    assert code == 1 and s["n_ok"] == 1 and s["n_failed"] == 4
    errors = {Path(r["input"]).name: r["error"] for r in rows}
    assert "4D" in errors["fourd.nii.gz"] and "fourd.nii.gz" in errors["fourd.nii.gz"]
    assert "cut.nii.gz" in errors["cut.nii.gz"] and "truncated" in errors["cut.nii.gz"]
    assert "do not look like CT" in errors["mr.nii.gz"]
    assert "MR, not CT" in errors["mr_series"]
    assert (out / "masks/good.nii.gz").is_file()


def test_a_volume_run_resumes(tmp_path, model):
    hu, _ = _phantom()
    (tmp_path / "in").mkdir()
    for n in range(2):
        _nifti(tmp_path / "in" / f"v{n}.nii.gz", hu, AFFINE)
    code, s, out, _ = _run(tmp_path, tmp_path / "in", model)
    assert code == 0 and s["n_ok"] == 2
    (out / "masks/v1.nii.gz").unlink()  # as if killed before the second one was written
    code, s, out, _ = _run(tmp_path, tmp_path / "in", model, resume=True)
    assert code == 0 and s["n_resumed"] == 1 and s["n_run"] == hu.shape[2]
    assert (out / "masks/v1.nii.gz").is_file()


# ---------------------------------------------------------------- DICOM in, NIfTI and DICOM-SEG out


def test_dicom_series_gives_nifti_with_its_geometry_and_seg(tmp_path, model):
    hu, liver = _phantom()
    stack = np.ascontiguousarray(np.transpose(hu, (2, 1, 0)))  # [K, R, C]
    write_series(tmp_path / "series", stack, spacing=(2.5, 0.8, 0.8), patient_name="Doe^Jane", patient_id="PID-12345")
    code, s, out, rows = _run(tmp_path, tmp_path / "series", model, output_format="nifti+dicom-seg", overlays=True)
    assert code == 0, s["failed"]
    from liverseg.core.dicom import read_seg_mask, read_series

    vol = read_series(tmp_path / "series")
    img = _nii(str(out / "masks/series.nii.gz"))
    assert img.shape == vol.shape and np.allclose(img.affine, vol.affine)
    seg = read_seg_mask(out / "masks/series_seg.dcm", vol)
    assert np.array_equal(seg, np.asarray(img.dataobj).transpose(2, 1, 0).astype(bool))
    # no patient identifiers in what the run writes for people to read
    for name in ("summary.json", "per_volume.csv", "per_image.csv", "journal.jsonl", "run.json"):
        text = (out / name).read_text()
        assert "Doe" not in text and "PID-12345" not in text, name
    assert not any("Doe" in line or "PID-12345" in line for line in s["_logs"])


def test_dicom_series_with_a_gap_is_refused_unless_allowed(tmp_path, model):
    hu, _ = _phantom()
    stack = np.ascontiguousarray(np.transpose(hu, (2, 1, 0)))
    write_series(tmp_path / "s", stack, spacing=(2.5, 0.8, 0.8))
    files = sorted((tmp_path / "s").rglob("*"))
    files[len(files) // 2].unlink()
    code, s, out, rows = _run(tmp_path / "a", tmp_path / "s", model)
    assert code == 1 and "missing slice" in s["failed"][0]["error"]
    code, s, out, rows = _run(tmp_path / "b", tmp_path / "s", model, allow_gaps=True)
    assert code == 0 and "off by up to" in rows[0]["notes"]


# ---------------------------------------------------------------- 16-bit HU slices


def test_16_bit_hu_slice_gives_the_mask_of_its_8_bit_png(tmp_path, model):
    hu, _ = _phantom(shape=(64, 64, 3))
    sl = hu[:, :, 1]
    Image.fromarray(np.clip(sl, 0, 255).astype(np.uint8)).save(tmp_path / "a8.png")
    Image.fromarray((sl.astype(np.int32) + 1024).astype(np.uint16)).save(tmp_path / "a16.png")
    # the phantom holds a handful of values, which inference would refuse as a label map
    out8 = _run(tmp_path / "8", tmp_path / "a8.png", model, allow_non_ct=True)[2]
    out16 = _run(tmp_path / "16", tmp_path / "a16.png", model, allow_non_ct=True)[2]
    assert np.array_equal(read_mask(out8 / "masks/a8_pred.png"), read_mask(out16 / "masks/a16_pred.png"))


# ---------------------------------------------------------------- real data


@pytest.mark.realdata
def test_lits_volume_with_labels(tmp_path, model, lits_dir):
    vol, seg = lits_dir / "volume.nii.gz", lits_dir / "segmentation.nii.gz"
    code, s, out, rows = _run(tmp_path, vol, model, labels=seg)
    assert code == 0, s["failed"]
    src, got = _nii(str(vol)), _nii(str(out / "masks/volume.nii.gz"))
    assert got.shape == src.shape and np.allclose(got.affine, src.affine)
    row = rows[0]
    assert row["dice"] != "" and row["volume_ml_true"] != ""
    assert float(row["volume_ml_true"]) == pytest.approx((np.asarray(_nii(str(seg)).dataobj) > 0).sum() / 1000)
    m = s["volume_metrics"]
    assert m["n_labelled"] == 1 and m["dice"]["n"] == 1


@pytest.mark.realdata
def test_chaos_dicom_gives_the_masks_of_its_pngs(tmp_path, model_1mm, chaos_dir):
    """The DICOM series and its PNG slices (HU clipped to [0, 255]) at --spacing 0.727 give the same masks."""
    code, s, out, rows = _run(tmp_path / "d", chaos_dir / "dicom", model_1mm, output_format="nifti+dicom-seg")
    assert code == 0, s["failed"]
    from liverseg.core.dicom import read_seg_mask, read_series

    series = read_series(chaos_dir / "dicom")
    img = _nii(str(out / "masks/dicom.nii.gz"))
    assert img.shape == series.shape == (512, 512, 78)
    assert np.allclose(img.affine, series.affine)
    assert np.allclose(img.header.get_zooms(), (0.7265625, 0.7265625, 2.0))
    # geometry from the headers: the first sorted slice's IPP is voxel (0, 0, 0) (LPS -> RAS)
    assert series.source_datasets is not None
    ipp = np.array([float(v) for v in series.source_datasets[0].ImagePositionPatient])
    assert np.allclose(img.affine @ [0, 0, 0, 1], [-ipp[0], -ipp[1], ipp[2], 1])
    code, s2, out2, _ = _run(tmp_path / "p", chaos_dir / "images", model_1mm, spacing=0.727)
    assert code == 0
    vol_mask = np.asarray(img.dataobj).transpose(2, 1, 0)  # [K, R, C], K in ascending position
    per_image = pd.read_csv(out2 / "per_image.csv", dtype=str)
    assert len(per_image) == 78
    # sorted slice k (ascending z) is file i{77-k} and PNG {77-k} (the files run superior -> inferior)
    for k in range(78):
        png = read_mask(out2 / f"masks/{77 - k:03d}_pred.png")
        assert np.array_equal(vol_mask[k].astype(bool), png), k
    assert json.loads((out / "summary.json").read_text())["preprocessing"]["model_pixel_spacing_mm"] == 1.4
    # the DICOM-SEG reads back with highdicom and holds the NIfTI mask (SEG frames in the series' slice order)
    seg = read_seg_mask(out / "masks/dicom_seg.dcm", series)
    assert vol_mask.any() and np.array_equal(np.asarray(seg, dtype=bool), vol_mask.astype(bool))


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([-0.8, -0.8, 2.0, 1.0]),  # RAS-flipped LPS (DICOM-like)
        np.diag([0.8, 0.8, -2.0, 1.0]),  # slices stored top down
        np.array([[0, 0.8, 0, 0], [0.8, 0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1.0]]),  # rows and columns swapped
    ],
)
def test_a_mask_written_from_the_axial_view_lies_on_the_input(tmp_path, affine):
    """write_nifti streams from_axial's view (no C-ordered copy): the file holds the same voxels."""
    import nibabel as nib

    from liverseg.core.volume import Volume, write_nifti

    rng = np.random.default_rng(0)
    data = rng.integers(0, 2, (6, 7, 5)).astype(np.uint8)
    vol = Volume(data, affine, "x.nii.gz", "nifti")
    axial = np.ascontiguousarray(vol.axial())
    view = vol.from_axial(axial, contiguous=False)
    assert np.array_equal(view, data) and np.array_equal(vol.from_axial(axial), data)
    write_nifti(tmp_path / "m.nii.gz", view, vol, fsync=False)
    assert np.array_equal(np.asarray(nib.load(tmp_path / "m.nii.gz").dataobj), data)  # type: ignore[attr-defined]


def test_runs_ask_for_the_probability_only_where_needed_and_never_change_the_session(
    tmp_path, model, model_1mm, monkeypatch
):
    """The session is opened once and never changed: each model call says whether it wants the probability
    (a model that records a pixel spacing resamples inputs to it and back; --save-probabilities keeps it)."""
    from conftest import record_keyword

    from liverseg.predict.model import ModelSession

    asked = record_keyword(monkeypatch, ModelSession, "run", "probability", False)
    hu, _ = _phantom()
    vol = _nifti(tmp_path / "v.nii.gz", hu, AFFINE)
    calls = []
    for name, m, kw in (("a", model_1mm, {}), ("b", model, {}), ("c", model, {"save_probabilities": True})):
        assert _run(tmp_path / name, vol, m, **kw)[0] == 0
        calls.append(set(asked))
        asked.clear()
    assert calls == [{True}, {False}, {True}]
    assert not hasattr(ModelSession, "want_probability")


def test_a_labelled_volume_run_and_its_report_import_neither_matplotlib_nor_pandas(tmp_path, model_1mm):
    """The report draws its charts as SVG: matplotlib cost a volume's report 0.46 s in a fresh process, and
    pandas (CSV lists only) 0.2 s of every command's start."""
    import subprocess
    import sys

    hu, liver = _phantom()
    vol = _nifti(tmp_path / "v.nii.gz", hu, AFFINE)
    lab = _nifti(tmp_path / "v_seg.nii.gz", liver.astype(np.uint8), AFFINE)
    code = (
        "import sys\nfrom pathlib import Path\nfrom liverseg.infer.runner import Options, run_inference\n"
        f"o = Options(source=Path({str(vol)!r}), labels=Path({str(lab)!r}), model=Path({str(model_1mm)!r}), "
        f"out=Path({str(tmp_path / 'out')!r}), progress=False, report=True)\n"
        "r = run_inference(o, log=lambda _: None)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'pandas'))\n"
        "print(r.exit_code, bad[:5]); sys.exit(1 if bad or r.exit_code else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{r.stdout} {r.stderr[-2000:]}"
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<svg" in html and "liver pixels and Dice per slice" in html


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("resampled", [False, True])
def test_volume_outputs_are_placed_beside_the_next_model_call_and_match_placing_in_turn(batch, resampled, monkeypatch):
    import threading

    from conftest import stub_predictor

    import liverseg.predict.predictor as vmod
    from liverseg.core.resample import resize_probability

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (7, 20, 24), dtype=np.uint8)
    model_in = np.ascontiguousarray(gray[:, ::2, ::2]) if resampled else gray
    vi = vmod.VolumeInput(volume=None, gray=gray, model_in=model_in, spacing=(1.0, 1.0, 1.0))  # type: ignore[arg-type]

    def model(x):  # a probability that depends on the pixel, and its mask at 0.5
        p = x.astype(np.float32) / 255.0
        return (p > 0.5).astype(np.uint8), p

    threads: list[str] = []

    def spy(p, shape):
        threads.append(threading.current_thread().name)
        return resize_probability(p, shape)

    monkeypatch.setattr(vmod, "resize_probability", spy)
    mask, prob, seconds = stub_predictor(model, batch, keep_probability=True).predict_volume(vi)
    want_prob = np.stack([resize_probability(s.astype(np.float32) / 255.0, (20, 24)) for s in model_in])
    assert prob is not None and seconds > 0
    np.testing.assert_array_equal(prob, want_prob)
    np.testing.assert_array_equal(mask, (want_prob > 0.5).astype(np.uint8))
    if resampled:  # each batch went back to the slice grid in the helper thread, not the model's
        assert len(threads) == 7 and all(t.startswith("liverseg-volume") for t in threads), threads
    mask2, prob2, _ = stub_predictor(model, batch).predict_volume(vi)
    assert prob2 is None
    np.testing.assert_array_equal(mask2, mask)


@pytest.mark.parametrize("stream", [True, False])
def test_slices_are_resampled_to_the_models_grid_behind_the_caller_with_the_same_pixels(monkeypatch, stream):
    import threading

    import liverseg.predict.predictor as vmod
    from liverseg.core.resample import resize_gray
    from liverseg.core.volume import Volume

    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 400, (40, 36, 7)).astype(np.int16)  # [I, J, K]: 7 axial slices of 0.5 mm pixels
    vol = Volume(hu, np.diag([0.5, 0.5, 2.0, 1.0]), "x.nii.gz", "nifti")
    threads: list[str] = []

    def spy(img, shape):
        threads.append(threading.current_thread().name)
        return resize_gray(img, shape)

    monkeypatch.setattr(vmod, "resize_gray", spy)
    monkeypatch.setattr(vmod, "STREAM_CHUNK", 3)
    prep = vmod.Prep(window=(-100.0, 200.0), model_spacing=1.0, allow_non_ct=True)  # uniform noise: not CT-like
    vi = vmod.volume_input(vol, prep, stream=stream)
    vi.wait(1)
    assert vi._ready >= 3  # the model is told of whole chunks
    vi.complete()
    assert vi.model_in.shape == (7, 18, 20) and vi.resampled and vi._ready == 7
    np.testing.assert_array_equal(vi.model_in, np.stack([resize_gray(s, (18, 20)) for s in vi.gray]))
    assert len(threads) == 7  # every slice once, in the preparing thread (streamed) or the caller's
    main = threading.current_thread().name
    assert all(t == ("liverseg-prepare" if stream else main) for t in threads), threads
