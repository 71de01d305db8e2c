"""The Python API (liverseg.segment, liverseg.Segmenter): arrays, volumes and files in, masks out.

Every test passes its own tiny exported model (the shipped reference model is not
needed); the results must equal liverseg-infer's on the same input.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import liverseg
from liverseg.core.errors import LiversegError, UsageError
from liverseg.infer.runner import Options, run_inference

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    import torch

    from liverseg.checkpoint import Checkpoint
    from liverseg.core.preprocess import Preprocessing
    from liverseg.models import create_model

    torch.manual_seed(0)
    args = {"in_channels": 1, "out_channels": 1, "width": 4}
    net = create_model("unet", **args)
    ckpt = Checkpoint("unet", args, Preprocessing(), {k: v.clone() for k, v in net.state_dict().items()})
    return ckpt.save(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="module")
def tiny_model(checkpoint, tmp_path_factory) -> Path:
    from liverseg.export.onnx import export_onnx
    from liverseg.models.checkpoint import load_checkpoint

    return export_onnx(
        load_checkpoint(checkpoint), tmp_path_factory.mktemp("model") / "model.onnx", example_shape=(1, 1, 64, 64)
    )


@pytest.fixture(scope="module")
def seg(tiny_model):
    with liverseg.Segmenter(tiny_model, device="cpu", engine="onnxruntime") as s:
        yield s


def _ct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """CT numbers in HU: air around a body of soft tissue with a brighter disc (the 'liver')."""
    arr = np.full(shape, -1000.0, dtype=np.float32)
    h, w = shape[-2:]
    yy, xx = np.mgrid[:h, :w]
    body = (yy - h / 2) ** 2 / (0.4 * h) ** 2 + (xx - w / 2) ** 2 / (0.45 * w) ** 2 < 1
    liver = (yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (0.2 * min(h, w)) ** 2
    arr[..., body] = 40.0
    arr[..., liver] = 120.0
    return (arr + rng.normal(0, 10, shape)).astype(np.int16)


def test_package_exports_the_api_lazily():
    assert {"segment", "Segmenter"} <= set(liverseg.__all__)
    code = "import sys, liverseg; assert 'onnxruntime' not in sys.modules; liverseg.Segmenter; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    with pytest.raises(AttributeError):
        liverseg.no_such_name  # noqa: B018


def test_api_does_not_import_torch(tiny_model, tmp_path):
    png = tmp_path / "s.png"
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(png)
    code = (
        "import sys, numpy as np, liverseg\n"
        f"m = liverseg.segment(np.zeros((32, 32), np.uint8), {str(tiny_model)!r})\n"
        "ct = np.tile(np.where(np.arange(32) > 16, 100, -1000).astype(np.int16), (3, 32, 1))\n"
        f"v = liverseg.segment(ct, {str(tiny_model)!r}, spacing=(2, 1, 1), allow_non_ct=True)\n"
        f"p = liverseg.segment({str(png)!r}, {str(tiny_model)!r})\n"
        "assert m.shape == (32, 32) and v.shape == (3, 32, 32) and p.shape == (40, 40)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxscript'))\n"
        "print(bad[:5]); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, f"the API imported torch/onnx: {r.stdout} {r.stderr}"


def test_2d_array_gives_a_mask_and_probabilities(seg, rng):
    img = _ct(rng, (48, 56))
    mask = seg.segment(img)
    assert mask.shape == img.shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    mask2, prob = seg.segment(img, probabilities=True)
    assert prob.shape == img.shape and prob.dtype == np.float32
    assert np.array_equal(mask, mask2)
    assert np.array_equal(mask, (prob > seg.threshold).astype(np.uint8))


def test_segment_function_equals_the_segmenter(tiny_model, seg, rng):
    img = _ct(rng, (40, 40))
    assert np.array_equal(liverseg.segment(img, tiny_model, device="cpu"), seg(img))


def test_volume_array_with_spacing_is_its_slices(seg, rng):
    vol = _ct(rng, (4, 40, 48))
    mask, prob = seg.segment(vol, spacing=(2.5, 0.8, 0.8), probabilities=True, anatomy=False)
    assert mask.shape == vol.shape and prob.shape == vol.shape
    for k in range(vol.shape[0]):  # [slices, rows, cols] as given: slice k is the 2D call on vol[k]
        assert np.array_equal(mask[k], seg(vol[k])), k


def test_volume_array_with_affine_matches_its_nifti_file(seg, rng, tmp_path):
    import nibabel as nib

    data = _ct(rng, (4, 40, 48)).transpose(2, 1, 0)  # a NIfTI's [I, J, K]
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])  # LPS: the model's own view
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    from_array = seg.segment(data, affine=affine)
    from_file = seg.segment(path)
    assert from_array.shape == data.shape == from_file.shape
    assert np.array_equal(from_array, from_file)
    flipped = seg.segment(
        data[::-1], affine=affine @ np.array([[-1, 0, 0, 47], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    )
    assert np.array_equal(flipped[::-1], from_array), "the affine's orientation is undone before the model"


def test_a_png_path_gives_what_liverseg_infer_writes(seg, tiny_model, rng, tmp_path):
    img = np.clip(_ct(rng, (48, 48)), 0, 255).astype(np.uint8)
    png = tmp_path / "in" / "slice.png"
    png.parent.mkdir()
    Image.fromarray(img).save(png)
    res = run_inference(
        Options(
            source=png,
            model=tiny_model,
            out=tmp_path / "out",
            progress=False,
            report=False,
            device="cpu",
            engine="onnxruntime",
        ),
        log=lambda s: None,
    )
    assert res.exit_code == 0, res.message
    written = np.asarray(Image.open(tmp_path / "out" / "masks" / "slice_pred.png")) > 0
    assert np.array_equal(seg(png).astype(bool), written)


def test_checkpoint_model_is_exported_once_into_the_cache(checkpoint, rng, tmp_path, monkeypatch):
    monkeypatch.setenv("LIVERSEG_CACHE_DIR", str(tmp_path / "cache"))
    said: list[str] = []
    img = _ct(rng, (32, 32))
    first = liverseg.segment(img, checkpoint, device="cpu", log=said.append)
    cached = list((tmp_path / "cache" / "checkpoints").glob("*/model.onnx"))
    assert len(cached) == 1 and any("exporting it to ONNX once" in s for s in said), said
    said.clear()
    second = liverseg.segment(img, checkpoint, device="cpu", log=said.append)
    assert any("from the cache" in s for s in said), said
    assert np.array_equal(first, second)


def test_bad_inputs_are_usage_errors(seg, tiny_model, tmp_path):
    with pytest.raises(UsageError, match="spacing"):
        seg.segment(np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(UsageError, match="4x4"):
        seg.segment(np.zeros((3, 16, 16), np.uint8), affine=np.eye(3))
    with pytest.raises(UsageError, match="2D image"):
        seg.segment(np.zeros((2, 2, 2, 2), np.uint8))
    with pytest.raises(UsageError, match="no such file"):
        seg.segment(tmp_path / "missing.png")
    with pytest.raises(LiversegError, match="cannot tell"):
        seg.segment(np.full((16, 16), 5.0, np.float32))
    with pytest.raises(UsageError, match="no such file"):
        liverseg.Segmenter(tmp_path / "nope.onnx")
    closed = liverseg.Segmenter(tiny_model, device="cpu")
    closed.close()
    with pytest.raises(UsageError, match="closed"):
        closed.segment(np.zeros((16, 16), np.uint8))


def test_device_cuda_that_cannot_load_is_an_error(tiny_model):
    from liverseg.core.errors import DeviceError

    try:
        s = liverseg.Segmenter(tiny_model, device="cuda")
    except DeviceError as e:
        assert "--device cuda" in str(e) and "would have run on the CPU" in str(e)
    else:
        assert s.device.startswith("cuda")


def test_no_model_means_the_shipped_reference_model(rng):
    from liverseg.reference import model_path

    shipped = model_path()
    if shipped is None:
        pytest.skip("the reference model is not in this checkout")
    with liverseg.Segmenter(device="cpu") as s:
        assert s.path.parent == shipped.parent  # model.onnx, or its gated int8 sibling where auto chose it
        assert "the reference model shipped with liverseg" in s.notes[0]
        assert s(_ct(rng, (64, 64))).shape == (64, 64)


def test_small_pages_inside_liverseg_and_numpys_setting_after(monkeypatch):
    """Huge-page advice made first touches of a volume 10x slower on the 2-vCPU VM (liverseg.core.pages):
    commands turn it off for their process, the API for the duration of a call, the user's variable wins."""
    import threading

    from click.testing import CliRunner

    from liverseg.core.cli import command
    from liverseg.core.pages import HUGEPAGE_ENV, prefer_small_pages, small_pages

    switch = np._core.multiarray._set_madvise_hugepage  # type: ignore[attr-defined]
    before = switch(True)
    seen: list[bool] = []

    @command()
    def noop() -> None:
        pass

    try:
        monkeypatch.delenv(HUGEPAGE_ENV, raising=False)
        # nested and concurrent blocks: off inside any of them, numpy's setting back after the last one
        inside, done = threading.Event(), threading.Event()

        def other() -> None:
            with small_pages():
                inside.set()
                done.wait(5)

        t = threading.Thread(target=other)
        with small_pages():
            t.start()
            inside.wait(5)
            with small_pages():
                seen.append(switch(False))
        seen.append(switch(False))  # the other thread is still inside: still off
        switch(False)
        done.set()
        t.join()
        seen.append(switch(True))  # the last block ended: back to numpy's setting (on)
        assert seen == [False, False, True]

        assert liverseg.segment(np.zeros((32, 32), np.uint8)) is not None and switch(True) is True  # API: put back
        assert CliRunner().invoke(noop, []).exit_code == 0 and switch(True) is False  # a command: off for good
        assert prefer_small_pages() is True and switch(True) is False
        monkeypatch.setenv(HUGEPAGE_ENV, "1")
        assert prefer_small_pages() is False and switch(True) is True  # the user's variable wins
        with small_pages():
            assert switch(True) is True
    finally:
        switch(before)


@pytest.mark.cpu_class
def test_one_session_serves_slices_and_volumes_and_each_call_asks_for_what_it_needs(rng, monkeypatch):
    """A Segmenter opens its model once, as liverseg-infer chooses, and never changes the session: a slice on its
    own grid asks for the mask alone, a slice given a spacing and a volume (resampled to the model's 1.5 mm and
    back) for the probability, and a closed Segmenter refuses."""
    from conftest import record_keyword

    import liverseg.api as api_mod
    from liverseg.core.choose import choose
    from liverseg.predict.model import ModelSession
    from liverseg.reference import model_path

    shipped = model_path()
    if shipped is None:
        pytest.skip("the reference model is not in this checkout")
    opened = record_keyword(monkeypatch, api_mod, "open_model", "engine")
    asked = record_keyword(monkeypatch, ModelSession, "run", "probability", False)
    with liverseg.Segmenter(device="cpu") as s:
        chosen = choose(shipped, device="cpu")
        assert (s._session().engine_name, s._session().precision) == (chosen.engine, chosen.precision)
        assert s(_ct(rng, (64, 64))).shape == (64, 64) and asked == [False]
        assert s(_ct(rng, (64, 64)), spacing=0.8).shape == (64, 64) and asked == [False, True]
        volume = _ct(rng, (4, 64, 64))
        assert s(volume, spacing=(2.0, 0.8, 0.8), second_look=False).shape == volume.shape
        assert asked[2:] == [True] * 4 and opened == ["auto"]
    assert s.session is None
    with pytest.raises(UsageError, match="closed"):
        s(_ct(rng, (64, 64)))


def test_image_objects_carry_their_own_geometry(tiny_model):
    """A nibabel or SimpleITK image is read with its geometry: spacing= or affine= beside it is refused, and a
    nibabel image that is not one 3D volume is refused with its shape."""
    import nibabel as nib
    import SimpleITK as sitk

    img = nib.Nifti1Image(np.zeros((8, 8, 4, 2), dtype=np.int16), np.eye(4))
    with liverseg.Segmenter(tiny_model, device="cpu") as s:
        with pytest.raises(UsageError, match=r"shape \(8, 8, 4, 2\): expected a 3D CT volume"):
            s.segment(img)
        with pytest.raises(UsageError, match="carries its own geometry"):
            s.segment(nib.Nifti1Image(np.zeros((8, 8, 4), dtype=np.int16), np.eye(4)), spacing=(1.0, 1.0, 1.0))
        with pytest.raises(UsageError, match="carries its own geometry"):
            s.segment(sitk.Image(8, 8, 4, sitk.sitkInt16), affine=np.eye(4))
        with pytest.raises(UsageError, match="3 components per pixel"):
            s.segment(sitk.Image([8, 8], sitk.sitkVectorUInt8, 3))
