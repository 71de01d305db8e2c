"""DICOM series reading and DICOM-SEG writing (liverseg/core/dicom.py) on synthetic series
from liverseg.apps.dicom_synth, and on the real CHAOS CT series when ../shared/data is there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from liverseg.apps.dicom_synth import encoder_missing, slice_positions, write_series
from liverseg.core.dicom import find_series, is_dicom_folder, read_seg_mask, read_series, write_seg
from liverseg.core.errors import DataError

hd = pytest.importorskip("highdicom")

PATIENT_STRINGS = ("Doe", "Jane", "PID-12345", "19700101")
K, R, C = 6, 12, 10


@pytest.fixture
def hu(rng) -> np.ndarray:
    """[K, R, C] CT numbers with no symmetry, within the int16 range of a CT."""
    return rng.integers(-1024, 2000, (K, R, C)).astype(np.int16)


def lps_to_ras(p: np.ndarray) -> np.ndarray:
    return np.array([-p[0], -p[1], p[2]], dtype=np.float64)


def assert_affine_matches_headers(vol) -> None:
    """affine @ [i, j, k, 1] equals the DICOM position of voxel (i, j) of slice k, for every slice and corner."""
    for k, ds in enumerate(vol.source_datasets):
        ipp = np.array([float(x) for x in ds.ImagePositionPatient])
        iop = np.array([float(x) for x in ds.ImageOrientationPatient])
        dr, dc = (float(x) for x in ds.PixelSpacing)
        for i, j in [(0, 0), (ds.Columns - 1, 0), (0, ds.Rows - 1), (3, 5)]:
            want = lps_to_ras(ipp + i * dc * iop[:3] + j * dr * iop[3:])
            np.testing.assert_allclose((vol.affine @ [i, j, k, 1])[:3], want, atol=1e-4)


def patient_free(*texts: str) -> None:
    for text in texts:
        for bad in PATIENT_STRINGS:
            assert bad not in text, f"patient data {bad!r} in {text!r}"


# ---- ordering, layout, rescale, affine ------------------------------------------------


def test_order_by_position_not_file_name_or_instance_number(tmp_path, hu):
    names = [f"z{n}.dcm" for n in (3, 0, 5, 1, 4, 2)]  # file name order unrelated to position
    write_series(tmp_path, hu, file_names=names, instance_numbers=[4, 1, 6, 2, 5, 3][::-1])
    vol = read_series(tmp_path)
    assert vol.kind == "dicom" and vol.shape == (C, R, K)
    np.testing.assert_array_equal(vol.data.transpose(2, 1, 0), hu)
    np.testing.assert_array_equal(vol.axial(), hu)
    assert vol.data.base is not None  # the transposed view of the [K, R, C] stack, not a copy
    assert_affine_matches_headers(vol)


def test_descending_z_is_sorted_ascending(tmp_path, hu):
    write_series(tmp_path, hu, offsets=[-2.0 * k for k in range(K)])  # file k is 2k mm *below* file 0
    vol = read_series(tmp_path)
    np.testing.assert_array_equal(vol.data.transpose(2, 1, 0), hu[::-1])
    assert_affine_matches_headers(vol)
    assert vol.affine[2, 2] == pytest.approx(2.0)  # k runs inferior -> superior
    assert vol.affine[2, 3] == pytest.approx(30.0 - 2.0 * (K - 1))


def test_nested_folders_no_suffix_and_junk_ignored(tmp_path, hu):
    names = [f"study/series/IM{k:04d}" if k % 2 else f"study/other/deeper/{k}" for k in range(K)]
    write_series(tmp_path, hu, file_names=names)
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "study" / "README").write_bytes(b"\x00" * 500)
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / "DICOMDIR").write_bytes(b"\x00" * 128 + b"DICMgarbage")  # skipped by name, never parsed
    assert is_dicom_folder(tmp_path)
    (series,) = find_series(tmp_path)
    assert series.n_files == K and series.is_image and series.modality == "CT"
    vol = read_series(tmp_path)
    np.testing.assert_array_equal(vol.axial(), hu)
    assert any("2 file(s) that are not DICOM ignored" in n for n in vol.notes)


def test_is_dicom_folder_false_for_other_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG" + b"\x00" * 200)
    assert not is_dicom_folder(tmp_path)
    assert not is_dicom_folder(tmp_path / "missing")


@pytest.mark.parametrize(
    ("slope", "intercept", "dtype"),
    [(1, -1024, np.int16), (2, -1000, np.int16), (1, 0, np.int16), (0.5, -1024, np.float32)],
)
def test_rescale_applied(tmp_path, hu, slope, intercept, dtype):
    want = hu if slope == 1 else (hu // 2) * 2  # values exactly representable with this slope
    write_series(tmp_path, want, slope=slope, intercept=intercept)
    vol = read_series(tmp_path)
    assert vol.data.dtype == dtype
    np.testing.assert_array_equal(vol.axial(), want)
    assert vol.meta["rescale"] == [slope, intercept]


def test_standard_axial_affine_codes(tmp_path, hu):
    import nibabel as nib

    write_series(tmp_path, hu, spacing=(2.5, 0.8, 0.6))
    vol = read_series(tmp_path)
    # IOP (1,0,0,0,1,0): columns run toward patient left (+x LPS), rows toward posterior
    # (+y LPS), slices along the normal +z = superior: the model's view ("L", "P", "S").
    assert nib.aff2axcodes(vol.affine) == ("L", "P", "S")
    assert vol.zooms == pytest.approx((0.6, 0.8, 2.5))
    assert vol.axial_spacing() == pytest.approx((2.5, 0.8, 0.6))
    assert_affine_matches_headers(vol)
    assert vol.spacing_trusted and not vol.notes


@pytest.mark.parametrize(
    ("iop", "codes"),
    [
        ((1, 0, 0, 0, 0, -1), ("L", "I", "P")),  # coronal: rows run downward, normal points posterior
        ((0, 1, 0, 0, 0, -1), ("P", "I", "R")),  # sagittal: normal = (0,1,0) x (0,0,-1) = -x = right
        ((np.cos(0.3), np.sin(0.3), 0, -np.sin(0.3), np.cos(0.3), 0), ("L", "P", "S")),  # oblique axial
    ],
)
def test_affine_other_orientations(tmp_path, hu, iop, codes):
    import nibabel as nib

    write_series(tmp_path, hu, iop=iop)
    vol = read_series(tmp_path)
    assert_affine_matches_headers(vol)
    assert nib.aff2axcodes(vol.affine) == codes


def test_gantry_tilt_gives_sheared_affine(tmp_path, hu):
    paths = write_series(tmp_path, hu)
    for k, p in enumerate(paths):  # each slice 0.5 mm further posterior: stacked 14 degrees off the normal
        ds = pydicom.dcmread(p)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.5 * k, z]
        ds.save_as(p)
    vol = read_series(tmp_path)
    assert_affine_matches_headers(vol)
    assert any("gantry tilt" in n and "14.04 degrees" in n for n in vol.notes)


def test_int16_overflow_widens_to_float32(tmp_path):
    hu = np.full((3, 8, 8), 100, np.int32)
    hu[2, 0, 0] = 40000  # stored as uint16 with intercept 0: beyond int16
    write_series(tmp_path, hu, intercept=0)
    vol = read_series(tmp_path)
    assert vol.data.dtype == np.float32 and any("float32" in n for n in vol.notes)
    np.testing.assert_array_equal(vol.axial(), hu)


# ---- geometry errors --------------------------------------------------------------------


def test_missing_slice_error_and_allow_gaps(tmp_path, hu):
    offsets = [0, 2, 4, 8, 10, 12]  # the slice at 6 mm is missing; positions are 30 + offset
    write_series(tmp_path, hu, offsets=offsets)
    with pytest.raises(DataError, match=r"missing slice.*between 34\.00 and 38\.00 mm") as e:
        read_series(tmp_path)
    assert str(tmp_path) in str(e.value) and "allow_gaps" in str(e.value)
    vol = read_series(tmp_path, allow_gaps=True)
    (note,) = [n for n in vol.notes if "allow_gaps" in n]
    assert "mean step" in note and "2.400 mm" in note and "off by up to 0.80 mm" in note
    np.testing.assert_array_equal(vol.axial(), hu)
    ipps = slice_positions(K, (-120.0, -95.5, 30.0), (1, 0, 0, 0, 1, 0), 2.0, offsets)
    for k in (0, K - 1):  # first and last land exactly
        np.testing.assert_allclose((vol.affine @ [0, 0, k, 1])[:3], lps_to_ras(ipps[k]), atol=1e-6)


def test_uneven_spacing_error_and_allow_gaps(tmp_path, hu):
    write_series(tmp_path, hu, offsets=[0, 2, 4, 6.5, 8.5, 10.5])
    with pytest.raises(DataError, match=r"uneven step 2\.50 mm between 34\.00 and 36\.50 mm"):
        read_series(tmp_path)
    vol = read_series(tmp_path, allow_gaps=True)
    assert any("uneven step" in n for n in vol.notes)


def test_small_jitter_is_tolerated(tmp_path, hu):
    write_series(tmp_path, hu, offsets=[0, 2.05, 4, 5.95, 8, 10])  # within 10 % of the median step
    vol = read_series(tmp_path)
    assert not vol.notes


def test_duplicate_positions(tmp_path, hu):
    write_series(tmp_path, hu, offsets=[0, 2, 4, 4, 6, 8])
    with pytest.raises(DataError, match=r"duplicate slice position.*slice0002\.dcm and slice0003\.dcm at 34\.000"):
        read_series(tmp_path)


def test_orientation_and_spacing_must_agree(tmp_path, hu):
    write_series(tmp_path / "a", hu[:3], series_uid="1.2.3.4")
    write_series(tmp_path / "b", hu[3:], series_uid="1.2.3.4", iop=(1, 0, 0, 0, 0.99, 0.141), origin=(0, 0, 100))
    with pytest.raises(DataError, match=r"ImageOrientationPatient differs .* in b/slice0000\.dcm"):
        read_series(tmp_path)
    write_series(tmp_path / "b", hu[3:], series_uid="1.2.3.4", spacing=(2.0, 0.8, 0.8), origin=(-120, -95.5, 36))
    with pytest.raises(DataError, match=r"PixelSpacing differs .* in b/slice0000\.dcm"):
        read_series(tmp_path)


def test_missing_pixel_spacing_not_trusted(tmp_path, hu):
    paths = write_series(tmp_path, hu)
    for p in paths:
        ds = pydicom.dcmread(p)
        del ds.PixelSpacing
        ds.save_as(p)
    vol = read_series(tmp_path)
    assert not vol.spacing_trusted
    assert any("no PixelSpacing" in n and "1 mm" in n for n in vol.notes)
    assert vol.zooms == pytest.approx((1.0, 1.0, 2.0))


# ---- series selection and modality ---------------------------------------------------


def test_mixed_series_listed_and_chosen(tmp_path, hu):
    write_series(tmp_path / "a", hu, series_uid="1.2.826.0.1.1", series_description="venous")
    write_series(tmp_path / "b", hu[:4] + 5, series_uid="1.2.826.0.1.2", series_description="arterial")
    with pytest.raises(DataError) as e:
        read_series(tmp_path)
    msg = str(e.value)
    assert "2 image series" in msg and "series_uid" in msg and "--series" in msg
    assert "1.2.826.0.1.1 (CT, 'venous', 6 files)" in msg and "1.2.826.0.1.2 (CT, 'arterial', 4 files)" in msg
    assert [s.uid for s in find_series(tmp_path)] == ["1.2.826.0.1.1", "1.2.826.0.1.2"]  # most files first
    vol = read_series(tmp_path, series_uid="1.2.826.0.1.2")
    np.testing.assert_array_equal(vol.axial(), hu[:4] + 5)
    assert vol.meta["series_instance_uid"] == "1.2.826.0.1.2" and vol.meta["n_files"] == 4
    with pytest.raises(DataError, match="no series with SeriesInstanceUID 9.9"):
        read_series(tmp_path, series_uid="9.9")


def test_mr_refused_unless_allowed(tmp_path, hu):
    write_series(tmp_path, hu, modality="MR")
    with pytest.raises(DataError, match="is MR, not CT"):
        read_series(tmp_path)
    vol = read_series(tmp_path, allow_non_ct=True)
    assert vol.meta["modality"] == "MR" and any("not CT" in n for n in vol.notes)


def test_empty_folder(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match=r"no DICOM image series found \(1 files, 1 not DICOM"):
        read_series(tmp_path)
    with pytest.raises(DataError, match="not found"):
        read_series(tmp_path / "nope")


# ---- pixel encodings and broken files ------------------------------------------------


@pytest.mark.parametrize("ts", [RLELossless, JPEG2000Lossless, JPEGLSLossless], ids=lambda u: u.name)
def test_compressed_series_decode_to_same_hu(tmp_path, rng, ts):
    reason = encoder_missing(ts)
    if reason:
        pytest.skip(reason)
    hu = rng.integers(-1024, 3000, (3, 64, 48)).astype(np.int16)  # JPEG 2000's default 6 levels need >= 64 px
    write_series(tmp_path, hu, transfer_syntax=ts)
    vol = read_series(tmp_path)
    np.testing.assert_array_equal(vol.axial(), hu)
    assert vol.meta["transfer_syntax"] == ts.name


def test_truncated_pixel_data_names_file(tmp_path, hu):
    paths = write_series(tmp_path, hu)
    raw = paths[2].read_bytes()
    paths[2].write_bytes(raw[: len(raw) - 100])
    with pytest.raises(DataError, match=r"slice0002\.dcm: pixel data .* cannot be read"):
        read_series(tmp_path)


@pytest.mark.parametrize("big", [False, True])
def test_each_file_is_parsed_once_and_the_volume_keeps_headers_only(tmp_path, rng, monkeypatch, big):
    """Pixel data larger than DEFER_BYTES stays in the file while the headers are scanned and is read when
    the slice is decoded: one dcmread per file; a truncated one still names its file."""
    import liverseg.core.dicom as dicom_mod

    shape = (4, 96, 100) if big else (4, 12, 10)  # 19 kB of pixels per slice (deferred), or 240 bytes
    assert (shape[1] * shape[2] * 2 > dicom_mod.DEFER_BYTES) == big
    hu = rng.integers(-1024, 2000, shape).astype(np.int16)
    paths = write_series(tmp_path / "s", hu)
    reads: list[str] = []
    real_read = pydicom.dcmread

    def counted(path, *args, **kwargs):
        reads.append(str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counted)
    vol = read_series(tmp_path / "s")
    np.testing.assert_array_equal(vol.axial(), hu)
    assert sorted(reads) == sorted(str(p) for p in paths)
    sources = vol.source_datasets
    assert sources is not None and len(sources) == len(paths) and all("PixelData" not in ds for ds in sources)
    raw = paths[1].read_bytes()
    paths[1].write_bytes(raw[: len(raw) - 100])
    with pytest.raises(DataError, match=r"slice0001\.dcm: pixel data .* cannot be read"):
        read_series(tmp_path / "s")


def test_truncated_header_names_file(tmp_path, hu):
    paths = write_series(tmp_path, hu)
    paths[3].write_bytes(paths[3].read_bytes()[:300])
    with pytest.raises(DataError, match=r"slice0003\.dcm: DICOM header .*truncated or corrupt"):
        read_series(tmp_path)
    assert find_series(tmp_path)[0].n_files == K - 1  # listing still works


def test_corrupt_compressed_pixel_data_names_file_and_syntax(tmp_path, rng):
    reason = encoder_missing(JPEG2000Lossless)
    if reason:
        pytest.skip(reason)
    hu = rng.integers(-1024, 3000, (3, 64, 64)).astype(np.int16)
    paths = write_series(tmp_path, hu, transfer_syntax=JPEG2000Lossless)
    ds = pydicom.dcmread(paths[1])
    frame = bytearray(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1).__next__())
    frame[20:] = b"\xff" * (len(frame) - 20)
    ds.PixelData = pydicom.encaps.encapsulate([bytes(frame)])
    ds.save_as(paths[1])
    with pytest.raises(DataError, match=r"slice0001\.dcm: pixel data \(JPEG 2000.*pylibjpeg-openjpeg"):
        read_series(tmp_path)


def test_no_patient_identifiers_anywhere(tmp_path, hu):
    write_series(tmp_path / "a", hu, offsets=[0, 2, 4, 8, 10, 12], series_uid="1.2.3.1")
    write_series(tmp_path / "b", hu, series_uid="1.2.3.2", modality="MR")
    texts = []
    for uid in (None, "1.2.3.1", "1.2.3.2"):
        with pytest.raises(DataError) as e:
            read_series(tmp_path, uid)
        texts.append(str(e.value))
    vol = read_series(tmp_path, series_uid="1.2.3.1", allow_gaps=True)
    texts += [str(vol.meta), *vol.notes]
    patient_free(*texts)
    assert "PatientName" not in vol.meta and all("patient" not in k.lower() for k in vol.meta)


# ---- enhanced multi-frame ------------------------------------------------------------


def make_enhanced(tmp_path: Path, hu: np.ndarray, **kwargs) -> tuple[Path, Path]:
    legacy = tmp_path / "legacy"
    paths = write_series(legacy, hu, **kwargs)
    datasets = [pydicom.dcmread(p) for p in paths]
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        datasets, series_instance_uid=hd.UID(), series_number=3, sop_instance_uid=hd.UID(), instance_number=1
    )
    out = tmp_path / "enhanced"
    out.mkdir()
    mf.save_as(out / "mf.dcm", enforce_file_format=True)
    return legacy, out


def test_enhanced_multiframe_matches_legacy(tmp_path, hu):
    legacy, enhanced = make_enhanced(tmp_path, hu, iop=(0.96, 0.28, 0, -0.28, 0.96, 0))
    a, b = read_series(legacy), read_series(enhanced)
    assert b.meta["enhanced_multiframe"] and b.meta["n_files"] == 1 and b.meta["n_slices"] == K
    np.testing.assert_array_equal(b.axial(), a.axial())
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-6)
    assert b.source_datasets is not None and len(b.source_datasets) == 1


def test_enhanced_multiframe_gap(tmp_path, hu):
    _, enhanced = make_enhanced(tmp_path, hu, offsets=[0, 2, 4, 8, 10, 12])
    with pytest.raises(DataError, match=r"mf\.dcm: slice spacing is irregular.*between 34\.00 and 38\.00"):
        read_series(enhanced)


# ---- DICOM-SEG ------------------------------------------------------------------------


def test_seg_round_trip(tmp_path, hu, rng):
    write_series(tmp_path / "ct", hu, offsets=[-2.0 * k for k in range(K)], file_names=[f"{k}" for k in range(K)])
    vol = read_series(tmp_path / "ct")
    mask = rng.random((K, R, C)) > 0.6
    mask[1] = False  # an empty frame, omitted from the file
    out = tmp_path / "seg.dcm"
    write_seg(vol, mask, out, software_version="0.1.0")
    assert not list(tmp_path.glob("*liverseg-tmp*"))
    np.testing.assert_array_equal(read_seg_mask(out, vol), mask)
    seg = hd.seg.segread(out)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == vol.meta["series_instance_uid"]
    assert seg.SeriesInstanceUID != vol.meta["series_instance_uid"]
    assert seg.Manufacturer == "liverseg" and seg.SeriesDescription == "liverseg liver"
    (desc,) = seg.SegmentSequence
    assert desc.SegmentLabel == "Liver" and desc.SegmentAlgorithmType == "AUTOMATIC"
    assert desc.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SCT Liver
    assert desc.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "0.1.0"
    assert seg.NumberOfFrames == K - 1


def test_seg_empty_mask(tmp_path, hu):
    write_series(tmp_path / "ct", hu)
    vol = read_series(tmp_path / "ct")
    out = tmp_path / "empty.dcm"
    write_seg(vol, np.zeros((K, R, C), np.uint8), out, software_version="0.1.0")
    assert not read_seg_mask(out, vol).any()


def test_seg_wrong_shape(tmp_path, hu):
    write_series(tmp_path / "ct", hu)
    vol = read_series(tmp_path / "ct")
    with pytest.raises(DataError, match=r"mask has shape \(6, 10, 12\)"):
        write_seg(vol, np.zeros((K, C, R), bool), tmp_path / "x.dcm", software_version="0")


def test_seg_round_trip_enhanced(tmp_path, hu, rng):
    _, enhanced = make_enhanced(tmp_path, hu)
    vol = read_series(enhanced)
    mask = rng.random((K, R, C)) > 0.5
    out = tmp_path / "seg.dcm"
    write_seg(vol, mask, out, software_version="0.1.0")
    np.testing.assert_array_equal(read_seg_mask(out, vol), mask)


# ---- real data --------------------------------------------------------------------------


@pytest.mark.realdata
def test_chaos_series(chaos_dir, tmp_path):
    folder = chaos_dir / "dicom"
    vol = read_series(folder)
    assert vol.shape == (512, 512, 78)
    assert vol.zooms == pytest.approx((0.7265625, 0.7265625, 2.0))
    assert vol.data.dtype == np.int16 and vol.spacing_trusted
    assert_affine_matches_headers(vol)
    # sorted ascending along +z: sorted slice k is file i(77-k) (file names run superior -> inferior)
    kk = 30
    ds = pydicom.dcmread(folder / f"i{77 - kk:04d},0000b.dcm")
    np.testing.assert_array_equal(vol.axial()[kk], ds.pixel_array.astype(np.int32) * 1 - 1000)
    assert vol.source_datasets is not None and vol.source_datasets[kk].SOPInstanceUID == ds.SOPInstanceUID
    patient_free(str(vol.meta), *vol.notes)

    mask = (vol.axial() >= 0) & (vol.axial() <= 200)
    out = tmp_path / "chaos-seg.dcm"
    write_seg(vol, mask, out, software_version="0.1.0")
    np.testing.assert_array_equal(read_seg_mask(out, vol), mask)


@pytest.mark.parametrize(
    "dtype, lo, hi, intercept",
    [
        (np.uint16, 0, 4095, -1024),
        (np.uint16, 30000, 65535, -32768),
        (np.int16, -2000, 3000, 100),
        (np.int16, -32000, 32000, 0),
    ],
)
def test_the_16_bit_fast_path_equals_int32_arithmetic(rng, dtype, lo, hi, intercept):
    """Stored + intercept in wrapping 16-bit arithmetic is exact whenever the result fits int16."""
    from liverseg.core.dicom import _Filler

    raw = rng.integers(lo, hi, size=(16, 16), endpoint=True).astype(dtype)
    filler = _Filler((1, 16, 16), np.int16, [])
    filler.put(0, raw, 1.0, float(intercept))
    np.testing.assert_array_equal(filler.stack[0], raw.astype(np.int64) + intercept)
    assert filler.stack.dtype == np.int16
