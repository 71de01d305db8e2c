"""The OpenVINO engine beside ONNX Runtime, the engine/precision choice (``auto``) and its record.

OpenVINO tests skip with a reason when the extra (``liverseg[openvino]``) is absent;
the tests of the choice rule and of the missing-extra message run everywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from liverseg.core.engine import (
    OPENVINO_MISSING,
    EngineOptions,
    cpu_class,
    open_engine,
    openvino_available,
)
from liverseg.core.errors import UsageError

needs_openvino = pytest.mark.skipif(
    not openvino_available(), reason="OpenVINO is not installed (pip install 'liverseg[openvino]')"
)


def _checkpoint(width: int = 4, seed: int = 0):
    import torch

    from liverseg.checkpoint import Checkpoint
    from liverseg.core.preprocess import Preprocessing
    from liverseg.models import create_model

    torch.manual_seed(seed)
    args = {"in_channels": 1, "out_channels": 1, "width": width}
    net = create_model("unet", **args)
    return Checkpoint("unet", args, Preprocessing(), {k: v.clone() for k, v in net.state_dict().items()})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from liverseg.export.onnx import export_onnx

    return export_onnx(_checkpoint(), tmp_path_factory.mktemp("model") / "model.onnx", example_shape=(1, 1, 64, 64))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVERSEG_CACHE_DIR", str(tmp_path / "cache"))


def _batch(n: int = 2, h: int = 48, w: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 1, h, w), dtype=np.uint8)


def test_cpu_class_from_flags():
    assert cpu_class(frozenset({"avx2", "avx512f", "avx512_vnni", "amx_bf16", "amx_tile"})) == "amx"
    assert cpu_class(frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})) == "avx512_vnni"
    assert cpu_class(frozenset({"avx2", "avx_vnni"})) == "avx_vnni"
    assert cpu_class(frozenset({"avx2", "fma"})) == "avx2"
    assert cpu_class(frozenset()) == "basic"


def test_missing_extra_names_the_install_command(tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(UsageError, match=r"pip install 'liverseg\[openvino\]'"):
        open_engine(tiny_model, engine="openvino")
    assert "liverseg[openvino]" in OPENVINO_MISSING


def test_onnxruntime_refuses_bf16(tiny_model):
    with pytest.raises(UsageError, match="no bf16"):
        open_engine(tiny_model, EngineOptions(precision="bf16"))


@needs_openvino
def test_openvino_fp32_matches_onnxruntime_and_reuses_its_compiled_model(tiny_model, tmp_path):
    x = _batch()
    ort = open_engine(tiny_model, EngineOptions(device="cpu"))
    ov = open_engine(tiny_model, EngineOptions(device="cpu", threads=1), engine="openvino")
    assert [o.name for o in ov.outputs()] == [o.name for o in ort.outputs()] == ["probability", "mask"]
    assert ov.inputs()[0].dtype == "uint8" and ov.metadata() == ort.metadata()
    p_ort, m_ort = ort.run({"image": x})
    p_ov, m_ov = ov.run({"image": x})
    assert m_ov.dtype == np.uint8 and np.array_equal(m_ov, m_ort)
    assert np.abs(p_ov - p_ort).max() < 1e-5
    assert "from the cache" not in ov.notes[0]
    again = open_engine(tiny_model, EngineOptions(device="cpu", threads=1), engine="openvino")
    assert "from the cache" in again.notes[0] and again.metadata() == ort.metadata()
    assert np.array_equal(again.run({"image": x}, ["mask"])[0], m_ort)
    # the key holds the precision: bf16 compiles afresh, into its own folder
    bf16 = open_engine(tiny_model, EngineOptions(precision="bf16", threads=1), engine="openvino")
    assert bf16.cache_dir != ov.cache_dir and "from the cache" not in bf16.notes[0]  # type: ignore[attr-defined]
    assert sorted(p.name for p in (tmp_path / "cache" / "openvino").iterdir()) == sorted(
        [ov.cache_dir.name, bf16.cache_dir.name]  # type: ignore[attr-defined]
    )


@needs_openvino
def test_openvino_refuses_cuda_and_fp16(tiny_model):
    from liverseg.core.errors import DeviceError

    with pytest.raises(DeviceError, match="engine onnxruntime"):
        open_engine(tiny_model, EngineOptions(device="cuda"), engine="openvino")
    with pytest.raises(UsageError, match="fp16"):
        open_engine(tiny_model, EngineOptions(precision="fp16"), engine="openvino")
