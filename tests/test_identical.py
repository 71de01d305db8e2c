"""liverseg.benchmarks.identical's comparison on tiny run folders built here (no model runs)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from liverseg.benchmarks.identical import compare_api, compare_cli

PER_IMAGE = 'index,input,output,status,latency_ms,dice,notes\n0,a.png,masks/a.png,ok,12.5,0.91,"x, y"\n'
PER_VOLUME = "index,input,output,seconds,volume_ml\n0,v.nii.gz,masks/v.nii.gz,3.2,1500.5\n"


def _run(root: Path) -> Path:
    (root / "masks").mkdir(parents=True)
    (root / "masks" / "a.png").write_bytes(b"\x89PNG mask bytes")
    (root / "per_image.csv").write_text(PER_IMAGE)
    (root / "per_volume.csv").write_text(PER_VOLUME)
    (root / "statistics.json").write_text('{"volumes": []}\n')
    (root / "summary.json").write_text('{"seconds": 1.0}\n')
    (root / ".liverseg-run.lock").write_text("pid 1\n")
    return root


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    before = _run(tmp_path / "before")
    return before, Path(shutil.copytree(before, tmp_path / "after"))


def test_identical_folders_pass(tmp_path: Path) -> None:
    before, after = _pair(tmp_path)
    cmp = compare_cli(before, after)
    assert cmp.differences == [] and cmp.files == 4  # summary.json and the lock are not compared


def test_a_changed_mask_byte_fails(tmp_path: Path) -> None:
    before, after = _pair(tmp_path)
    (after / "masks" / "a.png").write_bytes(b"\x89PNG mask bytez")
    assert compare_cli(before, after).differences == ["masks/a.png: bytes differ"]


def test_a_changed_cell_fails_and_a_missing_file_fails(tmp_path: Path) -> None:
    before, after = _pair(tmp_path)
    (after / "per_image.csv").write_text(PER_IMAGE.replace("0.91", "0.92"))
    (after / "statistics.json").unlink()
    assert compare_cli(before, after).differences == [
        "per_image.csv: row 1 column dice: '0.91' -> '0.92'",
        "statistics.json: only before",
    ]


def test_timing_and_run_files_may_change(tmp_path: Path) -> None:
    before, after = _pair(tmp_path)
    (after / "per_image.csv").write_text(PER_IMAGE.replace("12.5", "99.0"))
    (after / "per_volume.csv").write_text(PER_VOLUME.replace("3.2", "4.7"))
    (after / "summary.json").write_text('{"seconds": 2.0}\n')
    assert compare_cli(before, after).differences == []


def test_a_requoted_csv_fails(tmp_path: Path) -> None:
    before, after = _pair(tmp_path)
    (after / "per_volume.csv").write_text(PER_VOLUME.replace("1500.5", '"1500.5"'))
    assert compare_cli(before, after).differences == ["per_volume.csv: bytes differ (not csv.writer's layout)"]


def test_api_arrays_and_json(tmp_path: Path) -> None:
    for side in ("before", "after"):
        (tmp_path / side).mkdir()
        np.save(tmp_path / side / "x.mask.npy", np.zeros((2, 3), np.uint8))
        np.save(tmp_path / side / "x.probability.npy", np.full((2, 3), 0.25, np.float32))
        (tmp_path / side / "x.json").write_text('{"qc_flags": ["fragmented"]}')
    assert compare_api(tmp_path / "before", tmp_path / "after").differences == []
    np.save(tmp_path / "after" / "x.probability.npy", np.full((2, 3), 0.5, np.float32))
    (tmp_path / "after" / "x.json").write_text('{"qc_flags": []}')
    cmp = compare_api(tmp_path / "before", tmp_path / "after")
    assert cmp.differences == ["x.json: qc_flags differ", "x.probability.npy: 6 values differ (max abs 0.25)"]
    assert cmp.max_probability_diff == 0.25


def test_nifti_by_voxels_header_and_affine(tmp_path: Path) -> None:
    import gzip

    import nibabel as nib

    before, after = _pair(tmp_path)
    voxels = np.eye(4, dtype=np.uint8)[..., None]
    img = nib.Nifti1Image(voxels, np.diag([0.7, 0.7, 2.0, 1.0]))
    raw = img.to_bytes()
    (before / "masks" / "v.nii.gz").write_bytes(gzip.compress(raw, mtime=1))
    (after / "masks" / "v.nii.gz").write_bytes(gzip.compress(raw, mtime=2))  # same voxels, another gzip stamp
    cmp = compare_cli(before, after)
    assert cmp.differences == [] and cmp.notes == ["masks/v.nii.gz: .nii.gz bytes differ"]
    voxels[0, 1, 0] = 1
    img = nib.Nifti1Image(voxels, np.diag([0.7, 0.7, 2.0, 1.0]))
    (after / "masks" / "v.nii.gz").write_bytes(gzip.compress(img.to_bytes(), mtime=1))
    assert compare_cli(before, after).differences == ["masks/v.nii.gz: 1 values differ (max abs 1)"]
