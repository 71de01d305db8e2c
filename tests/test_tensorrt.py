"""``--engine tensorrt``: ONNX Runtime's TensorRT execution provider, **unverified**: it has never run on a GPU
(the lent H200 had no TensorRT), so nothing here shows that it segments anything. What runs without a GPU is
checked: the choice, the provider options, the errors and that every place it appears says it is unverified."""

from __future__ import annotations

from pathlib import Path

import pytest

from liverseg.core.choose import choose
from liverseg.core.engine import EngineOptions, open_engine, tensorrt_options
from liverseg.core.errors import DeviceError, UsageError


@pytest.fixture
def files(tmp_path) -> Path:
    for name in ("model.onnx", "model.int8.onnx"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path / "model.onnx"


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    from liverseg.benchmarks.artifacts import random_checkpoint
    from liverseg.export.onnx import export_onnx

    out = tmp_path_factory.mktemp("trt") / "model.onnx"
    return export_onnx(random_checkpoint("unet", 4), out, example_shape=(1, 1, 32, 32))


def _gates(**passed: bool) -> dict:
    return {"precision": "fp32", "gates": {k.replace("__", "/"): {"passed": v} for k, v in passed.items()}}


def test_tensorrt_is_only_used_when_asked_and_keeps_fp32_without_a_passed_gate(files):
    auto = choose(files, flags=frozenset({"avx2"}), openvino=False, gpu=True, contract=_gates())
    assert auto.engine == "onnxruntime"  # auto never picks TensorRT: its engines are built per shape
    trt = choose(files, engine="tensorrt", openvino=False, gpu=True, contract=_gates())
    assert (trt.engine, trt.precision, trt.path.name, trt.device) == ("tensorrt", "fp32", "model.onnx", "cuda")
    gated = choose(files, engine="tensorrt", gpu=True, contract=_gates(tensorrt__fp16=True))
    assert (gated.precision, gated.path.name, gated.gated) == ("fp16", "model.onnx", True)
    int8 = choose(files, engine="tensorrt", precision="int8", gpu=True, contract=_gates())
    assert (int8.precision, int8.path.name) == ("int8", "model.int8.onnx")
    assert "no passed TensorRT accuracy gate" in int8.notes[0]


def test_tensorrt_refuses_what_it_cannot_run(files):
    with pytest.raises(UsageError, match="runs on an NVIDIA GPU"):
        choose(files, engine="tensorrt", device="cpu", contract=_gates())
    with pytest.raises(UsageError, match="not bf16"):
        choose(files, engine="tensorrt", precision="bf16", gpu=True, contract=_gates())
    (files.parent / "model.int8.onnx").unlink()
    with pytest.raises(UsageError, match="model.int8.onnx does not exist"):
        choose(files, engine="tensorrt", precision="int8", gpu=True, contract=_gates())


def test_tensorrt_provider_options_set_the_precision_and_the_engine_cache(tmp_path):
    fp16 = tensorrt_options(EngineOptions(device="cuda", device_id=1, precision="fp16"), tmp_path)
    assert fp16["device_id"] == "1" and fp16["trt_fp16_enable"] == "True" and fp16["trt_int8_enable"] == "False"
    assert fp16["trt_engine_cache_enable"] == "True" and fp16["trt_engine_cache_path"] == str(tmp_path)
    assert fp16["trt_timing_cache_path"] == str(tmp_path)
    int8 = tensorrt_options(EngineOptions(device="cuda", precision="int8"), tmp_path)
    assert int8["trt_int8_enable"] == "True" and int8["trt_fp16_enable"] == "False"
    with pytest.raises(UsageError, match="bf16"):
        tensorrt_options(EngineOptions(device="cuda", precision="bf16"), tmp_path)


def test_tensorrt_without_its_provider_is_one_clear_error(tiny_onnx, capsys):
    """No TensorRT here: the CPU build has no such provider; the GPU build lists it but its library does not
    load (no GPU, no libnvinfer). Either way one DeviceError says what is missing, and nothing else is printed."""
    from liverseg.core.choose import gpu_present

    if gpu_present():
        pytest.skip("a GPU is present: TensorRT may load here")
    with pytest.raises(UsageError, match="runs on an NVIDIA GPU"):
        open_engine(tiny_onnx, EngineOptions(device="cpu"), engine="tensorrt")
    with pytest.raises(DeviceError, match="--engine tensorrt: .*TensorRT.*tensorrt-cu13"):
        open_engine(tiny_onnx, EngineOptions(device="cuda", precision="fp16"), engine="tensorrt")
    out = capsys.readouterr()
    assert "EP Error" not in out.out + out.err


def test_infer_with_tensorrt_on_a_machine_without_it_exits_2_naming_what_is_missing(tiny_onnx, tmp_path):
    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from liverseg.infer.cli import main

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "a.png")
    r = CliRunner().invoke(main, [str(tmp_path), "--model", str(tiny_onnx), "--engine", "tensorrt", "--device", "cuda"])
    assert r.exit_code == 2, r.output
    assert "tensorrt" in r.output.lower()


def test_an_export_on_a_gpu_machine_gates_tensorrt_and_records_why_it_could_not(tiny_onnx, monkeypatch):
    """With a GPU present the gates gain TensorRT fp16/int8 rows; here TensorRT cannot load, so each row
    says why and does not pass (``auto`` and ``--engine tensorrt --precision auto`` then keep fp32)."""
    import numpy as np

    import liverseg.core.choose as choose_mod
    from liverseg.export.verify import GATE_MIN_SLICES, RealSlices, engine_gates, gates_for_contract

    if choose_mod.gpu_present():
        pytest.skip("a real GPU: TensorRT may load and pass here")
    monkeypatch.setattr(choose_mod, "gpu_present", lambda: True)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32), dtype=np.uint8) for _ in range(GATE_MIN_SLICES)]
    masks: list[np.ndarray | None] = [rng.random((32, 32)) > 0.5 for _ in range(GATE_MIN_SLICES)]
    rows = engine_gates(tiny_onnx, RealSlices(images, masks, "synthetic"), threads=1)
    by = {(r["engine"], r["precision"]): r for r in rows}
    assert {("tensorrt", "fp16"), ("tensorrt", "int8")} <= set(by)
    assert not by["tensorrt", "fp16"]["passed"] and "run failed" in by["tensorrt", "fp16"]["reason"]
    assert not by["tensorrt", "int8"]["passed"] and by["tensorrt", "int8"]["reason"] == "no int8 file"
    assert gates_for_contract(rows)["tensorrt/fp16"]["passed"] is False


def test_tensorrt_reads_as_unverified_wherever_it_is_offered(files):
    """It has never run on a GPU: the --engine help, the choice's reason, the engine and the docs say so."""
    from click.testing import CliRunner

    from liverseg.core.engine import TensorRtEngine
    from liverseg.infer.cli import main

    shown = " ".join(CliRunner().invoke(main, ["--help"]).output.split())
    assert "tensorrt: ONNX Runtime's TensorRT provider on the GPU (only when asked; unverified" in shown
    assert "unverified" in choose(files, engine="tensorrt", gpu=True, contract=_gates()).reason
    assert "Unverified" in (TensorRtEngine.__doc__ or "")
    docs = (Path(__file__).parents[1] / "docs" / "inference-and-volumes.md").read_text()
    paragraph = docs[docs.index("`--engine tensorrt`") :].split("\n\n")[0]
    assert "**Unverified**" in paragraph
