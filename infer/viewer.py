"""The report's slice viewer: what it carries of a volume (or of a run's 2D slices) and its HTML.

A *payload* is a JSON object that :func:`viewer_html` embeds in the page with the
viewer's script (``viewer.js``, package data); the script draws the planes on canvases.
The page stays self-contained: no network, no external script.

What a volume's payload carries, and why it stays small:

* Its axial slices in the model's view (the windowed CT the model saw), box-filtered
  down to at most :data:`VIEW_SIDE` pixels a side and each encoded as a grayscale JPEG of
  quality :data:`JPEG_QUALITY`. Every slice is kept (the slider spans all of them); the
  browser decodes them once into one volume and reslices the coronal and sagittal planes
  from it, so those planes cost no bytes.
* One code per voxel at the same size (0 nothing, 1 prediction only, 2 truth only, 3
  both: bit 0 the prediction, bit 1 the truth, each box-filtered and kept where at least
  half of the box held it), zlib-compressed and inflated by the browser's
  ``DecompressionStream``.
* The labels of every slice (position in mm and, for DICOM, InstanceNumber), the
  orientation markers of each plane from the geometry, the spacing of the carried
  grid (the planes are drawn in true proportions) and where to start.

A 512x512x300 series becomes 256x256x300: see ``docs/report.md`` for its measured size.

2D runs get the same viewer over their slices (:func:`slices_payload`): each slice at its
own size (at most :data:`VIEW_SIDE` a side), in the order given (the report puts the worst
Dice first).
"""

from __future__ import annotations

import base64
import io
import json
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import numpy as np

from liverseg.core.html import esc
from liverseg.core.overlay import FN_COLOR, FP_COLOR, TP_VISIBLE_COLOR
from liverseg.core.volume import MODEL_AXCODES, axial_to_ras

if TYPE_CHECKING:
    from liverseg.core.volume import Volume

__all__ = [
    "JPEG_QUALITY",
    "VIEW_SIDE",
    "codes",
    "markers",
    "slices_payload",
    "viewer_assets",
    "viewer_html",
    "volume_payload",
]

VIEW_SIDE = 256  # the largest in-plane side the viewer carries (pixels)
JPEG_QUALITY = 85
PAYLOAD_VERSION = 1
PLANES = ("axial", "coronal", "sagittal")
PREDICTED_COLOR = TP_VISIBLE_COLOR  # the predicted liver when there is no truth: the true positives' colour

HELP = {
    "volume": "Slider, mouse wheel or arrow keys over an image move through its slices; a click on one plane moves "
    "the other two there.",
    "slices": "Slider, mouse wheel or arrow keys over the image move from slice to slice.",
}

# RAS+ letters of each world axis, for the positive and the negative direction
_POSITIVE, _NEGATIVE = "RAS", "LPI"


# ---------------------------------------------------------------- pixels


def _shrunk_size(rows: int, cols: int) -> tuple[int, int]:
    f = min(1.0, VIEW_SIDE / max(rows, cols))
    return max(1, round(rows * f)), max(1, round(cols * f))


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [R, C] box-filtered to ``size`` (rows, cols); the array itself when it is that size."""
    if img.shape == size:
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size[1], size[0]), Image.Resampling.BOX))


def _jpeg(img: np.ndarray) -> str:
    """base64 of a grayscale JPEG of ``img`` (uint8 [R, C])."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def codes(pred: np.ndarray, truth: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """uint8 [R', C'] codes of one slice: bit 0 the prediction, bit 1 the truth, each at ``size`` by majority."""

    def shrink(mask: np.ndarray) -> np.ndarray:
        m = np.asarray(mask, dtype=bool)
        if m.shape == size:
            return m
        return _resize(m.view(np.uint8) * np.uint8(255), size) >= 128

    out = shrink(pred).astype(np.uint8)
    if truth is not None:
        out |= shrink(truth).astype(np.uint8) << 1
    return out


def _shrink_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool [n, R', C']: each mask of ``masks`` [n, R, C] at ``size``, kept where at least half of its box held it.

    A whole factor (512 -> 256) is a sum of strided views in numpy: 0.14-0.30 s for a 300x512x512 mask where
    Pillow's box filter, slice by slice, took 1.1 s, with the same result (2-vCPU Xeon, shared); another factor
    goes through :func:`codes`.
    """
    n, r, c = masks.shape
    fr, fc = r // size[0], c // size[1]
    if (r, c) == size:
        return np.asarray(masks, dtype=bool)
    if fr * size[0] != r or fc * size[1] != c:
        return np.stack([codes(m, None, size).astype(bool) for m in masks])
    m = np.asarray(masks, dtype=bool).view(np.uint8)
    count = np.zeros((n, *size), dtype=np.uint16)
    for dr in range(fr):  # strided adds: numpy's sum over the block axes of a 5D view is as slow as Pillow
        for dc in range(fc):
            count += m[:, dr::fr, dc::fc]
    return count * 2 >= fr * fc


def _deflate(data: bytes) -> str:
    try:  # zlib-ng (a base dependency) writes the same zlib stream several times faster
        from zlib_ng import zlib_ng

        packed = zlib_ng.compress(data, 6)
    except ImportError:  # pragma: no cover
        packed = zlib.compress(data, 6)
    return base64.b64encode(packed).decode("ascii")


def _frames(slices: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> list[str]:
    """The JPEGs of ``slices`` shrunk to ``sizes``, two at a time (Pillow releases the GIL)."""
    with ThreadPoolExecutor(2, thread_name_prefix="liverseg-viewer") as pool:
        return list(pool.map(lambda a: _jpeg(_resize(a[0], a[1])), zip(slices, sizes)))


def _colors(labelled: bool) -> dict[str, list[int]]:
    if labelled:
        return {"1": list(FP_COLOR), "2": list(FN_COLOR), "3": list(TP_VISIBLE_COLOR)}
    return {"1": list(PREDICTED_COLOR), "3": list(PREDICTED_COLOR)}


# ---------------------------------------------------------------- geometry


def _letter(direction: np.ndarray) -> str:
    """The patient-direction letter (R/L/A/P/S/I) a RAS+ vector points to most."""
    m = int(np.argmax(np.abs(direction)))
    return _POSITIVE[m] if direction[m] > 0 else _NEGATIVE[m]


def _opposite(letter: str) -> str:
    return dict(zip(_POSITIVE + _NEGATIVE, _NEGATIVE + _POSITIVE))[letter]


def markers(volume: Volume | None) -> tuple[dict[str, list[str]], str | None]:
    """Each plane's markers [top, right, bottom, left] from the geometry, and a note when they are assumed.

    The planes are drawn from :meth:`Volume.axial`'s array: axial rows down and columns
    right; coronal and sagittal with the last slice at the top (columns, resp. rows,
    running right). Each marker is the direction the axis of the drawn image points to
    in RAS+ (the file's affine); without a volume, or where the header gives no
    orientation (an identity affine, read in the model's view), the model's view is
    assumed and said.
    """
    if volume is None or volume.view_affine is not None:
        col, row, sl = MODEL_AXCODES  # nibabel's axis codes name the direction each axis runs to
        note = "orientation assumed: the input gives none (markers show the model's view)"
    else:
        o, c, r, s = axial_to_ras(volume, np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.float64))
        col, row, sl = _letter(c - o), _letter(r - o), _letter(s - o)
        note = None
    out = {
        "axial": [_opposite(row), col, row, _opposite(col)],
        "coronal": [sl, col, _opposite(sl), _opposite(col)],
        "sagittal": [sl, row, _opposite(sl), _opposite(row)],
    }
    return out, note


def _world(volume: Volume | None, points: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, str]:
    """Positions of (slice, row, column) ``points`` in mm and the coordinate system's name.

    DICOM inputs in the series' patient coordinates (LPS, as ImagePositionPatient and a
    radiologist's viewer give them); other files in the RAS+ coordinates of their
    affine; without a volume, index times spacing.
    """
    if volume is None or volume.view_affine is not None:
        return points * np.asarray(spacing)[None, :], "index x spacing"
    ras = axial_to_ras(volume, points)
    if volume.kind == "dicom":
        return ras * np.array([-1.0, -1.0, 1.0]), "LPS"
    return ras, "RAS"


def _instance_numbers(volume: Volume | None, k: int) -> list[int | None] | None:
    """InstanceNumber of each axial slice of the model's view (a classic DICOM series of axial slices), else None.

    A slice of the view is found in the series through the affine: the file's third axis
    is the series' slices in ascending position (:mod:`liverseg.core.dicom`).
    """
    headers = None if volume is None else volume.source_datasets
    if volume is None or volume.kind != "dicom" or not headers or len(headers) != volume.shape[2]:
        return None
    ras = axial_to_ras(volume, np.c_[np.arange(k), np.zeros(k), np.zeros(k)])
    ijk = np.linalg.solve(volume.affine, np.c_[ras, np.ones(k)].T).T
    order = np.rint(ijk[:, 2]).astype(int)
    if len(set(order.tolist())) != k or order.min() < 0 or order.max() >= len(headers):
        return None  # the view's slices are not the series' slices (not an axial acquisition)
    out: list[int | None] = []
    for i in order:
        value = headers[int(i)].get("InstanceNumber", None)
        out.append(int(value) if value not in (None, "") else None)
    return out


def _axis_positions(n: int, n_view: int) -> np.ndarray:
    """Centres of ``n_view`` boxes over ``n`` pixels, in the source's pixel index."""
    return (np.arange(n_view) + 0.5) * (n / n_view) - 0.5


def _labels(
    volume: Volume | None, shape: tuple[int, int, int], view: tuple[int, int], spacing: tuple[float, float, float]
) -> tuple[dict[str, list[str]], str]:
    """The label of every axial slice, coronal row and sagittal column carried, and the coordinate system."""
    k, r, c = shape
    rows, cols = _axis_positions(r, view[0]), _axis_positions(c, view[1])
    mid = np.array([(k - 1) / 2, (r - 1) / 2, (c - 1) / 2])
    pts = np.concatenate(
        [
            np.c_[np.arange(k), np.full(k, mid[1]), np.full(k, mid[2])],
            np.c_[np.full(len(rows), mid[0]), rows, np.full(len(rows), mid[2])],
            np.c_[np.full(len(cols), mid[0]), np.full(len(cols), mid[1]), cols],
        ]
    )
    world, system = _world(volume, pts, spacing)
    z, y, x = world[:k, 2], world[k : k + len(rows), 1], world[k + len(rows) :, 0]
    numbers = _instance_numbers(volume, k)
    axial = []
    for i in range(k):
        text = f"slice {i + 1} of {k} · z = {z[i]:.1f} mm"
        if numbers is not None and numbers[i] is not None:
            text += f" · InstanceNumber {numbers[i]}"
        axial.append(text)
    coronal = [f"row {i + 1} of {len(rows)} · y = {v:.1f} mm" for i, v in enumerate(y)]
    sagittal = [f"column {i + 1} of {len(cols)} · x = {v:.1f} mm" for i, v in enumerate(x)]
    return {"axial": axial, "coronal": coronal, "sagittal": sagittal}, system


# ---------------------------------------------------------------- payloads


def volume_frames(gray: np.ndarray) -> list[str]:
    """The viewer's pictures of a volume's slices (``gray`` uint8 [K, R, C]): they need no mask, so they can be
    made while the model runs."""
    k, r, c = gray.shape
    return _frames(list(gray), [_shrunk_size(r, c)] * k)


def volume_payload(
    gray: np.ndarray,
    pred: np.ndarray,
    truth: np.ndarray | None,
    spacing: tuple[float, float, float],
    volume: Volume | None = None,
    frames: list[str] | None = None,
) -> dict[str, Any]:
    """What the viewer carries of one volume: ``gray`` uint8 [K, R, C] in the model's view, its masks, geometry.

    ``spacing`` is (slice, row, column) mm of ``gray``; ``volume`` gives the positions,
    markers and InstanceNumbers (its voxels are not read, only its header); ``frames``: the slices'
    pictures when :func:`volume_frames` made them already.
    """
    k, r, c = gray.shape
    view = _shrunk_size(r, c)
    frames = volume_frames(gray) if frames is None else frames
    code = np.empty((k, *view), dtype=np.uint8)
    for k0 in range(0, k, 32):  # 32 slices at a time: the block sums of a whole volume would double its memory
        part = slice(k0, k0 + 32)
        code[part] = _shrink_masks(pred[part], view)
        if truth is not None:
            code[part] |= _shrink_masks(truth[part], view).view(np.uint8) << 1
    ref = truth if truth is not None and truth.any() else pred
    start = [k // 2, view[0] // 2, view[1] // 2]
    if ref.any():
        where = [np.flatnonzero(ref.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
        areas = ref.reshape(k, -1).sum(axis=1)
        start = [
            int(np.argmax(areas)),
            int(where[1][len(where[1]) // 2] * view[0] / r),
            int(where[2][len(where[2]) // 2] * view[1] / c),
        ]
    labels, system = _labels(volume, (k, r, c), view, spacing)
    marks, note = markers(volume)
    return {
        "v": PAYLOAD_VERSION,
        "kind": "volume",
        "sizes": [[view[1], view[0]]] * k,
        "spacing_mm": [spacing[0], spacing[1] * r / view[0], spacing[2] * c / view[1]],
        "frames": frames,
        "codes": _deflate(code.tobytes()),
        "labelled": truth is not None,
        "colors": _colors(truth is not None),
        "labels": labels,
        "coordinates": system,
        "markers": marks,
        "orientation_note": note,
        "start": start,
    }


def slices_payload(
    images: Sequence[np.ndarray], preds: Sequence[np.ndarray], truths: Sequence[np.ndarray | None], labels: list[str]
) -> dict[str, Any]:
    """What the viewer carries of a run's 2D slices, in the order given, each with its ``labels`` text."""
    sizes = [_shrunk_size(*img.shape[:2]) for img in images]
    grays = [img if img.ndim == 2 else img[..., 0] for img in images]
    labelled = any(t is not None for t in truths)
    code = b"".join(codes(p, t, s).tobytes() for p, t, s in zip(preds, truths, sizes))
    return {
        "v": PAYLOAD_VERSION,
        "kind": "slices",
        "sizes": [[s[1], s[0]] for s in sizes],
        "frames": _frames(grays, sizes),
        "codes": _deflate(code),
        "labelled": labelled,
        "colors": _colors(labelled),
        "labels": {"axial": labels},
        "markers": None,
        "orientation_note": None,
        "start": [0, 0, 0],
    }


def payload_json(payload: dict[str, Any]) -> str:
    """The payload as compact JSON."""
    return json.dumps(payload, separators=(",", ":"))


# ---------------------------------------------------------------- HTML


def viewer_assets() -> str:
    """The viewer's style and script, once per page."""
    pkg = files("liverseg.infer")
    css = pkg.joinpath("viewer.css").read_text(encoding="utf-8")
    js = pkg.joinpath("viewer.js").read_text(encoding="utf-8")
    return f"<style>{css}</style>\n<script>{js}</script>"


def legend(labelled: bool) -> str:
    """The colours of the overlay, as the viewer draws them."""

    def sw(c: Sequence[int], text: str) -> str:
        return f'<span class="lsv-sw" style="background:rgb({c[0]},{c[1]},{c[2]})"></span>{esc(text)}'

    if labelled:
        items = [sw(TP_VISIBLE_COLOR, "true positive"), sw(FP_COLOR, "false positive"), sw(FN_COLOR, "false negative")]
    else:
        items = [sw(PREDICTED_COLOR, "predicted liver")]
    return '<span class="lsv-legend">' + "".join(items) + "</span>"


def _plane_html(plane: str, payload: dict[str, Any], n: int, start: int) -> str:
    marks = (payload.get("markers") or {}).get(plane) or ["", "", "", ""]
    label = (payload["labels"].get(plane) or [""])[start] if n else ""
    spans = "".join(
        f'<span class="lsv-m lsv-{side}">{esc(m)}</span>' for side, m in zip(("top", "right", "bottom", "left"), marks)
    )
    return (
        f'<figure class="lsv-plane lsv-{plane}" data-plane="{plane}">'
        f'<div class="lsv-frame"><canvas tabindex="0" aria-label="{plane} plane"></canvas>{spans}</div>'
        f'<input type="range" class="lsv-slider" min="0" max="{max(0, n - 1)}" value="{start}" '
        f'aria-label="{plane} slice">'
        f'<figcaption class="lsv-label">{esc(label)}</figcaption></figure>'
    )


def viewer_html(payload: dict[str, Any], dom_id: str) -> str:
    """The viewer of one payload: controls, legend, one plane per view, the data (script-safe JSON)."""
    k = len(payload["frames"])
    start = payload.get("start") or [0, 0, 0]
    planes = [_plane_html("axial", payload, k, int(start[0]))]
    if payload["kind"] == "volume":
        w, h = payload["sizes"][0]
        planes.append(_plane_html("coronal", payload, h, int(start[1])))
        planes.append(_plane_html("sagittal", payload, w, int(start[2])))
    notes = []
    if payload.get("orientation_note"):
        notes.append(payload["orientation_note"])
    if payload.get("coordinates"):
        notes.append(
            {
                "LPS": "positions in mm in the series' patient coordinates (LPS, as ImagePositionPatient)",
                "RAS": "positions in mm in the file's RAS+ coordinates",
            }.get(payload["coordinates"], f"positions in mm ({payload['coordinates']})")
        )
    data = payload_json(payload).replace("<", "\\u003c")  # no "</script>" can end the data early
    return (
        f'<section class="lsv" data-src="{esc(dom_id)}">'
        '<div class="lsv-controls"><label><input type="checkbox" class="lsv-on" checked> overlay</label>'
        '<label>opacity <input type="range" class="lsv-alpha" min="0" max="100" value="50"></label>'
        '<label><input type="checkbox" class="lsv-lines" checked> crosshair</label>'
        f"{legend(bool(payload.get('labelled')))}</div>"
        f'<div class="lsv-planes">{"".join(planes)}</div>'
        + (f'<p class="note">{esc("; ".join(notes))}</p>' if notes else "")
        + f'<p class="note lsv-help">{HELP[payload["kind"]]}</p>'
        f'<script type="application/json" id="{esc(dom_id)}">{data}</script></section>'
    )
