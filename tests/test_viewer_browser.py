"""report.html's viewer in a real browser: the system's headless Chromium, driven by Selenium and chromedriver.

A volume run folder is made here with known masks on a known affine (the file stored
left-right and foot-head flipped), its report is written, and the browser moves the
slider, the keys and the wheel, and reads the slice label, the orientation markers and
the canvas pixels at the blobs' positions. The browser comes from the Debian packages
``chromium`` and ``chromium-driver`` (scripts/system-packages.sh, run by ``make test``):
without them these tests skip with the reason, and fail under LIVERSEG_REQUIRE_DATA=1 (CI).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from liverseg.benchmarks.report_viewer import VIEWER_DONE, browser_missing, open_chromium, wait_for
from liverseg.core.volume import Volume
from liverseg.infer.report import write_report
from liverseg.infer.viewer import payload_json, slices_payload, viewer_assets, viewer_html, volume_payload

SHAPE = (64, 48, 20)  # i, j, k of the file
AFFINE = np.array([[0.8, 0, 0, -25.6], [0, 0.8, 0, -19.2], [0, 0, -2.5, 40.0], [0, 0, 0, 1]])  # i->R, j->A, k->I
GRAY = 100
TP_SLICES, FN_SLICES = range(4, 8), range(8, 11)  # view slices (inferior first), all below the middle


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    why = browser_missing()
    if why:
        if os.environ.get("LIVERSEG_REQUIRE_DATA") == "1":
            pytest.fail(f"headless Chromium cannot be driven: {why}; LIVERSEG_REQUIRE_DATA=1 makes this a failure")
        pytest.skip(f"headless Chromium cannot be driven: {why}")
    driver = open_chromium(1300, 1000)
    yield driver
    driver.quit()


def _view(file_mask: np.ndarray) -> np.ndarray:
    """A mask in the file's order as the viewer's axial array [K, R, C]."""
    return Volume(file_mask.astype(np.uint8), AFFINE, "mask", "nifti").axial().astype(bool)


def _blobs() -> tuple[np.ndarray, np.ndarray]:
    """(prediction, truth) in the view: a true positive on the patient's right, a false positive on the left (both
    on TP_SLICES), a false negative behind the first (FN_SLICES)."""
    k = SHAPE[2]
    pred, truth = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    tp_k = [k - 1 - s for s in TP_SLICES]  # the file runs head to foot
    fn_k = [k - 1 - s for s in FN_SLICES]
    pred[44:54, 26:34, tp_k] = truth[44:54, 26:34, tp_k] = True  # x > 0: the patient's right
    pred[8:16, 30:38, tp_k] = True  # x < 0: the patient's left, false positive
    truth[44:54, 10:18, fn_k] = True  # posterior right: false negative
    return _view(pred), _view(truth)


def _centre(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) on the axial canvas of the middle of ``mask`` [R, C]."""
    rows, cols = np.nonzero(mask)
    return int(np.median(cols)), int(np.median(rows))


@pytest.fixture(scope="module")
def volume_report(tmp_path_factory) -> tuple[Path, dict[str, Any], np.ndarray, np.ndarray]:
    """A volume run folder in the runner's format with the viewer's data, and its report."""
    run = tmp_path_factory.mktemp("viewer") / "run"
    (run / "overlays").mkdir(parents=True)
    vol = Volume(np.zeros(SHAPE, np.int16), AFFINE, "case.nii.gz", "nifti")
    pred, truth = _blobs()
    gray = np.full(pred.shape, GRAY, np.uint8)
    payload = volume_payload(gray, pred, truth, vol.axial_spacing(), vol)
    (run / "overlays" / "case_viewer.json").write_text(payload_json(payload))
    row = {
        "index": 0,
        "input": "data/case.nii.gz",
        "output": "masks/case.nii.gz",
        "status": "ok",
        "kind": "nifti",
        "shape": "x".join(map(str, SHAPE)),
        "spacing_mm": "0.8x0.8x2.5",
        "n_slices": SHAPE[2],
        "dice": 0.5,
        "hd95_mm": 12.0,
        "assd_mm": 3.0,
        "volume_ml": 10.0,
        "volume_ml_true": 9.0,
        "qc_flags": "partial_fov",
        "complete": "False",
    }
    for name in ("per_volume.csv", "per_image.csv"):
        with (run / name).open("w", newline="") as f:
            w = csv.DictWriter(f, list(row))
            w.writeheader()
            w.writerow(row)
    summary = {"n_inputs": 1, "n_ok": 1, "images_per_second": 0.5, "wall_seconds": 2.0, "model_seconds": 1.0}
    (run / "summary.json").write_text(json.dumps(summary))
    return write_report(run), payload, pred, truth


def _js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def _slide(driver: Any, plane: str, value: int) -> None:
    _js(
        driver,
        "const s = document.querySelector(`.lsv-${arguments[0]} .lsv-slider`); s.value = arguments[1];"
        "s.dispatchEvent(new Event('input'));",
        plane,
        value,
    )


def _label(driver: Any, plane: str) -> str:
    return _js(driver, "return document.querySelector(`.lsv-${arguments[0]} .lsv-label`).textContent;", plane)


def _pixel(driver: Any, plane: str, x: int, y: int) -> tuple[int, int, int]:
    rgba = _js(
        driver,
        "const c = document.querySelector(`.lsv-${arguments[0]} canvas`);"
        "return Array.from(c.getContext('2d').getImageData(arguments[1], arguments[2], 1, 1).data);",
        plane,
        x,
        y,
    )
    return int(rgba[0]), int(rgba[1]), int(rgba[2])


def _is(rgb: tuple[int, int, int], color: str) -> bool:
    """The pixel is gray, or the overlay colour ``color`` blended over gray (the dominant channel by a margin)."""
    r, g, b = rgb
    if color == "gray":
        return max(rgb) - min(rgb) <= 6 and abs(r - GRAY) <= 8
    channel = {"red": 0, "green": 1, "blue": 2}[color]
    return all(rgb[channel] > rgb[c] + 60 for c in range(3) if c != channel)


def _open(driver: Any, report: Path) -> None:
    driver.get(report.resolve().as_uri())
    wait_for(driver, VIEWER_DONE, timeout_s=20)
    assert not _js(driver, "return document.querySelector('.lsv').dataset.error || null;")
    _js(driver, "const c = document.querySelector('.lsv-lines'); if (c.checked) c.click();")  # no crosshair


def test_report_opens_with_findings_and_every_slice_in_the_slider(browser, volume_report):
    report, payload, _, _ = volume_report
    _open(browser, report)
    text = _js(browser, "return document.body.innerText;")
    assert text.index("10.0 mL") < text.index("overlay") < text.index("Run: engine, device and speed")
    assert "partial_fov" in text and "0.5000" in text and "12.00 mm" in text
    slider = _js(browser, "const s = document.querySelector('.lsv-axial .lsv-slider'); return [s.min, s.max];")
    assert slider == ["0", str(SHAPE[2] - 1)]
    for plane, want in payload["markers"].items():
        got = _js(
            browser,
            "return ['top', 'right', 'bottom', 'left'].map(side => "
            "document.querySelector(`.lsv-${arguments[0]} .lsv-${side}`).textContent);",
            plane,
        )
        assert got == want
    assert payload["markers"]["axial"] == ["A", "L", "P", "R"]  # radiological: the patient's right on the left


def test_slider_moves_the_label_and_the_overlay_at_known_positions(browser, volume_report):
    report, _, pred, truth = volume_report
    _open(browser, report)
    k = TP_SLICES[1]
    tp, fp, fn = _centre(pred[k] & truth[k]), _centre(pred[k] & ~truth[k]), _centre(truth[FN_SLICES[0]])
    assert tp[0] < SHAPE[0] / 2 < fp[0], "the true positive lies on the patient's right: the canvas' left half"
    _slide(browser, "axial", k)
    # the view's slice k is the file's slice 19 - k, at z = 40 - 2.5 (19 - k)
    assert _label(browser, "axial") == f"slice {k + 1} of {SHAPE[2]} · z = {40 - 2.5 * (SHAPE[2] - 1 - k):.1f} mm"
    assert _is(_pixel(browser, "axial", *tp), "green") and _is(_pixel(browser, "axial", *fp), "blue")
    assert _is(_pixel(browser, "axial", *fn), "gray")
    _slide(browser, "axial", FN_SLICES[0])
    assert _label(browser, "axial").startswith(f"slice {FN_SLICES[0] + 1} of ")
    assert _is(_pixel(browser, "axial", *fn), "red") and _is(_pixel(browser, "axial", *tp), "gray")
    _js(browser, "document.querySelector('.lsv-on').click();")  # overlay off: the CT alone
    assert _is(_pixel(browser, "axial", *fn), "gray")
    _js(browser, "document.querySelector('.lsv-on').click();")
    assert _is(_pixel(browser, "axial", *fn), "red")


def test_keys_wheel_and_a_click_move_the_planes(browser, volume_report):
    from selenium.webdriver.common.keys import Keys

    report, payload, pred, truth = volume_report
    _open(browser, report)
    k = TP_SLICES[0]
    _slide(browser, "axial", k)
    canvas = browser.find_element("css selector", ".lsv-axial canvas")
    canvas.send_keys(Keys.ARROW_UP)
    assert _label(browser, "axial").startswith(f"slice {k + 2} of ")
    _js(browser, "arguments[0].dispatchEvent(new WheelEvent('wheel', {deltaY: 100, bubbles: true}));", canvas)
    assert _label(browser, "axial").startswith(f"slice {k + 3} of ")
    assert _js(browser, "return document.querySelector('.lsv-axial .lsv-slider').value;") == str(k + 2)
    # the coronal plane through the true positive shows it at its height, the top of the image being superior
    _slide(browser, "axial", k)
    x, y = _centre(pred[k] & truth[k])
    _slide(browser, "coronal", y)
    assert _label(browser, "coronal") == payload["labels"]["coronal"][y]
    assert _is(_pixel(browser, "coronal", x, SHAPE[2] - 1 - k), "green")
    assert _is(_pixel(browser, "coronal", x, SHAPE[2] - 1 - FN_SLICES[-1] - 2), "gray")
    # a click on the false positive in the axial plane moves the coronal and sagittal planes there
    fx, fy = _centre(pred[k] & ~truth[k])
    _js(
        browser,
        "const c = arguments[0], b = c.getBoundingClientRect();"
        "c.dispatchEvent(new MouseEvent('click', {bubbles: true, clientX: b.left + (arguments[1] + 0.5) * b.width / "
        "c.width, clientY: b.top + (arguments[2] + 0.5) * b.height / c.height}));",
        canvas,
        fx,
        fy,
    )
    assert _label(browser, "coronal") == payload["labels"]["coronal"][fy]
    assert _label(browser, "sagittal") == payload["labels"]["sagittal"][fx]
    assert _is(_pixel(browser, "sagittal", fy, SHAPE[2] - 1 - k), "blue")


def test_2d_slices_step_through_frames_of_their_own_size(browser, tmp_path):
    big, small = np.full((80, 120), GRAY, np.uint8), np.full((40, 30), GRAY, np.uint8)
    pred_big, pred_small = np.zeros((80, 120), bool), np.ones((40, 30), bool)
    truth_big, truth_small = np.zeros((80, 120), bool), np.zeros((40, 30), bool)
    truth_big[10:30, 10:30] = True  # a false negative on the worst slice
    payload = slices_payload(
        [big, small], [pred_big, pred_small], [truth_big, truth_small], ["1 of 2 · a.png", "2 of 2 · b.png"]
    )
    page = tmp_path / "slices.html"
    page.write_text(f"<!DOCTYPE html><html><body>{viewer_html(payload, 'lsv-s')}{viewer_assets()}</body></html>")
    _open_slices = page.resolve().as_uri()
    browser.get(_open_slices)
    wait_for(browser, VIEWER_DONE, timeout_s=20)
    assert _label(browser, "axial") == "1 of 2 · a.png"
    assert _js(browser, "return document.querySelector('.lsv-coronal');") is None  # no other planes for 2D
    size = "const c = document.querySelector('.lsv-axial canvas'); return [c.width, c.height];"
    assert _js(browser, size) == [120, 80] and _is(_pixel(browser, "axial", 20, 20), "red")
    _slide(browser, "axial", 1)
    wait_for(browser, "document.querySelector('.lsv-axial .lsv-label').textContent === '2 of 2 · b.png'")
    assert _js(browser, size) == [30, 40] and _is(_pixel(browser, "axial", 5, 5), "blue")


def test_a_run_folder_without_viewer_data_keeps_its_still_overlays_and_says_why(volume_report, tmp_path):
    """A run folder written before the viewer (no overlays/<key>_viewer.json): its PNG overlays, and a note."""
    import shutil

    from PIL import Image

    report, _, _, _ = volume_report
    old = tmp_path / "old"
    shutil.copytree(report.parent, old)
    (old / "overlays" / "case_viewer.json").unlink()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(old / "overlays" / "case_axial_0007.png")
    html = write_report(old).read_text()
    assert 'class="lsv"' not in html and "<script" not in html
    assert "holds no viewer data (case_viewer.json)" in html and 'alt="case.nii.gz: axial slice 7"' in html
