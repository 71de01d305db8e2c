"""Synthetic DICOM CT series (tests, the volume benchmark): valid CT Image Storage files written with pydicom.

:func:`write_series` writes one file per slice of a [K, R, C] HU array with the full
geometry (IPP, IOP, PixelSpacing, SliceThickness), rescale and UIDs, optionally
compressed with one of pydicom 3's encoders (:func:`encoder_missing` says why one
cannot be used here).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def encoder_missing(transfer_syntax: str) -> str | None:
    """Why pydicom cannot encode ``transfer_syntax`` here, or None when it can."""
    from pydicom.pixels import get_encoder

    try:
        enc = get_encoder(transfer_syntax)
    except NotImplementedError as e:
        return str(e)
    if not enc.is_available:
        return f"no encoder for {pydicom.uid.UID(transfer_syntax).name}: {enc.missing_dependencies}"
    return None


def slice_positions(
    n: int, origin: Sequence[float], iop: Sequence[float], step: float, offsets: Sequence[float] | None = None
) -> np.ndarray:
    """[n, 3] IPPs: ``origin + offset_k * normal`` with ``offset_k = k * step`` unless ``offsets`` are given."""
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    off = np.arange(n) * step if offsets is None else np.asarray(offsets, float)
    return np.asarray(origin, float)[None, :] + off[:, None] * normal[None, :]


def write_series(
    folder: str | os.PathLike[str],
    volume_hu: np.ndarray,
    spacing: tuple[float, float, float] = (2.0, 0.7, 0.7),
    origin: Sequence[float] = (-120.0, -95.5, 30.0),
    iop: Sequence[float] = (1, 0, 0, 0, 1, 0),
    file_names: Sequence[str] | None = None,
    series_uid: str | None = None,
    modality: str = "CT",
    intercept: float = -1024,
    slope: float = 1,
    transfer_syntax: str = ExplicitVRLittleEndian,
    patient_name: str = "Doe^Jane",
    patient_id: str = "PID-12345",
    *,
    offsets: Sequence[float] | None = None,
    instance_numbers: Sequence[int] | None = None,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_description: str = "synthetic axial",
) -> list[Path]:
    """Write ``volume_hu`` ([K, R, C], slice k at ``origin + offset_k * normal``) as K files; their paths.

    ``spacing`` = (slice step, row spacing, column spacing) in mm; ``offsets`` (mm along
    the normal) replace ``k * spacing[0]`` to make gaps or uneven steps.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vol = np.asarray(volume_hu)
    k_n, rows, cols = vol.shape
    stored = np.rint((vol.astype(np.float64) - intercept) / slope)
    signed = bool(stored.min() < 0)
    if signed:
        assert stored.min() >= -32768 and stored.max() <= 32767, "stored values do not fit int16"
        stored_arr = stored.astype(np.int16)
    else:
        assert stored.max() <= 65535, "stored values do not fit uint16"
        stored_arr = stored.astype(np.uint16)
    ipps = slice_positions(k_n, origin, iop, spacing[0], offsets)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    names = list(file_names) if file_names is not None else [f"slice{k:04d}.dcm" for k in range(k_n)]
    numbers = list(instance_numbers) if instance_numbers is not None else list(range(1, k_n + 1))
    sop_class = CTImageStorage if modality == "CT" else pydicom.uid.UID(MR_IMAGE_STORAGE)
    paths = []
    for k in range(k_n):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = for_uid
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "F"
        ds.AccessionNumber = "ACC1"
        ds.StudyID = "1"
        ds.StudyDate = "20240101"
        ds.StudyTime = "120000"
        ds.ReferringPhysicianName = ""
        ds.Modality = modality
        ds.Manufacturer = "SynthCo"
        ds.SeriesNumber = 2
        ds.SeriesDescription = series_description
        ds.InstanceNumber = int(numbers[k])
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [float(x) for x in ipps[k]]
        ds.ImageOrientationPatient = [float(x) for x in iop]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[2])]
        ds.SliceThickness = float(abs(spacing[0]))
        ds.SliceLocation = float(ipps[k][2])
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleIntercept = intercept
        ds.RescaleSlope = slope
        ds.RescaleType = "HU"
        ds.PixelData = stored_arr[k].tobytes()
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax)
        path = folder / names[k]
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
