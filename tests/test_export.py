"""Export: self-contained TorchScript / ONNX files, their contract, and measured parity.

One tester parametrised over models x formats x shapes: tiny widths and small images,
exported at one shape and checked at others. The parity checks go through the
library's ``verify``, and each has a counterpart that proves it can fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from liverseg.checkpoint import Checkpoint, file_sha256
from liverseg.core.contract import (
    CONTRACT_KEY,
    INPUT_NAME,
    MASK_NAME,
    PROB_NAME,
    read_onnx_contract,
    read_torchscript_contract,
)
from liverseg.core.errors import ExportError
from liverseg.core.preprocess import Preprocessing
from liverseg.export import verify as verify_mod
from liverseg.export.cli import FILES, PARITY_FILE, main
from liverseg.export.onnx import export_onnx, supported_opsets
from liverseg.export.quantize import convert_fp16, quantize_int8
from liverseg.export.torchscript import export_torchscript, load_torchscript
from liverseg.export.verify import FP32_PROB_ATOL, FP32_PROB_RTOL, RealSlices, Tolerance, verify
from liverseg.models import create_model, required_multiple

EXPORT_SHAPE = (1, 1, 64, 64)
# (batch, height, width) at which parity is checked: none is the export shape, most are
# not multiples of 16 or 32, one is smaller than a single U-Net tile.
CHECK_SHAPES = [(3, 50, 77), (2, 33, 130), (1, 12, 9)]
VARIANTS = {
    "unet": ("unet", Preprocessing(pad_multiple=16)),
    "baseline": ("baseline", Preprocessing(pad_multiple=32)),
    # z-score normalisation and a fixed network size: resize in and out inside the graph
    "unet-zscore-resize": ("unet", Preprocessing(normalize="zscore", size=(48, 40), pad_multiple=16)),
}


def make_checkpoint(
    name: str = "unet", pp: Preprocessing | None = None, seed: int = 0, width: int = 4, threshold: float = 0.5
) -> Checkpoint:
    torch.manual_seed(seed)
    net = create_model(name, width=width)
    if pp is None:
        pp = Preprocessing(pad_multiple=required_multiple(name))
    return Checkpoint(
        name,
        {"width": width},
        pp,
        net.state_dict(),
        threshold=threshold,
        epoch=3,
        history=[{"epoch": 3, "dice": 0.9, "mIoU": 0.8}],
        best={"metric": "dice", "value": 0.9, "epoch": 3},
        data_summary={"train": {"images": 10}, "val": {"images": 2}},
        config={"model": name},
    )


def disk(img_h: int, img_w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic slice: a bright disk (the 'liver') on noise, and its mask."""
    yy, xx = np.mgrid[:img_h, :img_w]
    cy, cx, r = rng.uniform(0.35, 0.65) * img_h, rng.uniform(0.35, 0.65) * img_w, 0.25 * min(img_h, img_w)
    truth = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    img = np.clip(rng.normal(40, 15, (img_h, img_w)) + truth * 80, 0, 255).astype(np.uint8)
    return img, truth


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run faster on one thread, and the 2 cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Checkpoint, dict[str, Path]]]:
    """Every variant saved as a checkpoint and exported once to both formats at EXPORT_SHAPE."""
    out = {}
    for key, (name, pp) in VARIANTS.items():
        d = tmp_path_factory.mktemp(key)
        ckpt = make_checkpoint(name, pp)
        ckpt.save(d / "best.pt")
        ckpt.path = d / "best.pt"
        out[key] = (
            ckpt,
            {
                "torchscript": export_torchscript(ckpt, d / FILES["torchscript"], example_shape=EXPORT_SHAPE),
                "onnx": export_onnx(ckpt, d / FILES["onnx"], example_shape=EXPORT_SHAPE),
            },
        )
    return out


# ---------------------------------------------------------------- parity matrix


@pytest.mark.parametrize("shape", CHECK_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parity_at_other_shapes(exported, variant, fmt, shape):
    ckpt, files = exported[variant]
    n, h, w = shape
    report = verify(ckpt, {fmt: files[fmt]}, check_shape=(n, 1, h, w))
    (r,) = report.results
    assert report.ok, report.summary()
    (c,) = r.checks
    assert c["n_images"] == n and c["mask_pixels"] == n * h * w
    assert c["prob_max_abs"] <= FP32_PROB_ATOL and c["prob_rel_l2"] <= FP32_PROB_RTOL
    assert c["mask_pixels_differ_off_threshold"] == 0


def test_outputs_have_the_contract_names_dtypes_and_dynamic_dims(exported):
    import onnxruntime as ort

    _, files = exported["unet"]
    model = onnx.load(str(files["onnx"]))
    onnx.checker.check_model(str(files["onnx"]), full_check=True)
    dims = {
        vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in [*model.graph.input, *model.graph.output]
    }
    assert dims == {INPUT_NAME: ["N", 1, "H", "W"], PROB_NAME: ["N", 1, "H", "W"], MASK_NAME: ["N", 1, "H", "W"]}
    sess = ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in sess.get_inputs()] == [(INPUT_NAME, "tensor(uint8)")]
    assert [(o.name, o.type) for o in sess.get_outputs()] == [
        (PROB_NAME, "tensor(float)"),
        (MASK_NAME, "tensor(uint8)"),
    ]
    module, _ = load_torchscript(files["torchscript"])
    p, m = module(torch.zeros(2, 1, 21, 35, dtype=torch.uint8))
    assert p.dtype == torch.float32 and m.dtype == torch.uint8 and p.shape == m.shape == (2, 1, 21, 35)


def test_raw_hu_input_is_windowed_inside_the_graph(tmp_path):
    ckpt = make_checkpoint("baseline", Preprocessing(pad_multiple=32, window=(-100.0, 300.0)))
    files = {
        "torchscript": export_torchscript(ckpt, tmp_path / "m.pt", raw=True, example_shape=EXPORT_SHAPE),
        "onnx": export_onnx(ckpt, tmp_path / "m.onnx", raw=True, example_shape=EXPORT_SHAPE),
    }
    assert read_onnx_contract(files["onnx"])["inputs"][0]["dtype"] == "float32"
    assert read_onnx_contract(files["onnx"])["input_kind"] == "hu"
    report = verify(ckpt, files, raw=True, check_shape=(2, 1, 40, 57))
    assert report.ok, report.summary()
    # a uint8 export checked as if it took HU is caught by the contract check
    bad = verify(
        ckpt,
        {"onnx": export_onnx(ckpt, tmp_path / "u8.onnx", example_shape=EXPORT_SHAPE)},
        raw=True,
        check_shape=(1, 1, 16, 16),
    )
    assert not bad.ok


def test_real_slices(exported, msd_dir, seed_format):
    from liverseg.core.images import discover

    ckpt, files = exported["unet"]
    samples = discover(msd_dir)[:2] + discover(seed_format / "data" / "test_x.csv", root=seed_format)[:1]
    real = RealSlices.from_samples(samples, "msd-liver-256 + seed-format")
    assert all(m is not None for m in real.masks)
    report = verify(ckpt, files, real=real, check_shape=(2, 1, 96, 80))
    assert report.ok, report.summary()
    for r in report.results:
        real_check = r.checks[-1]
        assert (
            real_check["inputs"].startswith("real 3 slices")
            and "256x256" in real_check["inputs"]
            and "512x512" in real_check["inputs"]
        )
        assert real_check["n_labelled"] == 3
        assert real_check["mask_pixels_differ_off_threshold"] == 0
        assert abs(real_check["dice_change"]) < 1e-3


# ---------------------------------------------------------------- parity checks can fail


def test_wrong_threshold_fails_by_contract_and_by_masks(tmp_path):
    ckpt = make_checkpoint("unet")
    x = np.random.default_rng(1).integers(0, 256, size=(2, 1, 40, 56), dtype=np.uint8)
    with torch.inference_mode():
        prob, _ = ckpt.build_pipeline()(torch.from_numpy(x))
    thr = float(prob.median())  # about half the pixels lie on each side of this threshold
    wrong = export_onnx(ckpt, tmp_path / "wrong.onnx", threshold=thr, example_shape=EXPORT_SHAPE)
    report = verify(ckpt, {"onnx": wrong}, [x])
    assert not report.ok
    text = " | ".join(report.results[0].failures)
    assert "contract threshold" in text and "mask pixels differ" in text
    assert report.results[0].checks[0]["mask_pixels_differ_off_threshold"] > 0
    # the same graph with a contract that lies about its threshold: the masks alone catch it
    model = onnx.load(str(wrong))
    for p in model.metadata_props:
        if p.key == CONTRACT_KEY:
            c = json.loads(p.value)
            c["threshold"] = ckpt.threshold
            p.value = json.dumps(c)
    onnx.save(model, str(tmp_path / "liar.onnx"))
    report = verify(ckpt, {"onnx": tmp_path / "liar.onnx"}, [x])
    assert not report.ok
    assert all("mask pixels differ" in f for f in report.results[0].failures), report.results[0].failures


def test_other_weights_fail_on_probabilities(tmp_path):
    ckpt = make_checkpoint("baseline")
    other = make_checkpoint("baseline", seed=1)
    files = {
        "torchscript": export_torchscript(other, tmp_path / "m.pt", example_shape=EXPORT_SHAPE),
        "onnx": export_onnx(other, tmp_path / "m.onnx", example_shape=EXPORT_SHAPE),
    }
    report = verify(ckpt, files, check_shape=(1, 1, 40, 40))
    assert not report.ok
    for r in report.results:
        assert r.status == "fail"
        assert any("probability max |diff|" in f and f"atol {FP32_PROB_ATOL:g}" in f for f in r.failures), r.failures


def test_missing_or_foreign_artifact_is_an_error_not_a_pass(tmp_path):
    ckpt = make_checkpoint("baseline")
    (tmp_path / "x.onnx").write_bytes(b"not onnx")
    report = verify(ckpt, {"onnx": tmp_path / "x.onnx", "gone": tmp_path / "gone.pt"}, check_shape=(1, 1, 8, 8))
    assert not report.ok and [r.status for r in report.results] == ["error", "error"]


# ---------------------------------------------------------------- contract


def test_contract_in_onnx_metadata_and_torchscript_extra_file(exported):
    ckpt, files = exported["unet"]
    sha = file_sha256(ckpt.path)
    meta = {p.key: p.value for p in onnx.load(str(files["onnx"])).metadata_props}
    for key in (
        CONTRACT_KEY,
        "liverseg.model",
        "liverseg.threshold",
        "liverseg.preprocessing",
        "liverseg.input",
        "liverseg.outputs",
        "liverseg.checkpoint_sha256",
        "liverseg.version",
        "torch.version",
    ):
        assert meta.get(key), key
    assert meta["liverseg.checkpoint_sha256"] == sha and meta["torch.version"] == torch.__version__
    for c in (json.loads(meta[CONTRACT_KEY]), read_torchscript_contract(files["torchscript"])):
        assert c["model"] == {"name": "unet", "args": {"width": 4}}
        assert c["preprocessing"] == ckpt.preprocessing.to_dict()
        assert c["threshold"] == 0.5 and c["precision"] == "fp32"
        assert c["inputs"] == [{"name": INPUT_NAME, "dtype": "uint8", "shape": ["N", 1, "H", "W"]}]
        assert [(o["name"], o["dtype"]) for o in c["outputs"]] == [(PROB_NAME, "float32"), (MASK_NAME, "uint8")]
        assert c["training"]["data_summary"] == ckpt.data_summary and c["training"]["best"] == ckpt.best
        assert c["training"]["last_metrics"] == ckpt.history[-1]
        assert c["checkpoint_sha256"] == sha
        assert c["versions"]["torch"] == torch.__version__ and c["versions"]["liverseg"]
        assert "padding" in c
    assert json.loads(meta[CONTRACT_KEY])["opset"] == 18


CLIENT = textwrap.dedent("""
    import json, sys
    sys.modules["torch"] = None      # importing torch or liverseg now raises ImportError
    sys.modules["liverseg"] = None
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    contract = json.loads(sess.get_modelmeta().custom_metadata_map["liverseg.contract"])
    image = np.load(sys.argv[2])                       # uint8 [H, W], as read from a PNG
    (inp,) = contract["inputs"]
    prob, mask = sess.run([o["name"] for o in contract["outputs"]], {inp["name"]: image[None, None]})
    np.save(sys.argv[3], mask[0, 0])
    print(json.dumps({"threshold": contract["threshold"], "prob": str(prob.dtype), "mask": str(mask.dtype)}))
""")


def test_a_client_with_only_onnxruntime_and_numpy_gets_the_masks(exported, tmp_path):
    ckpt, _ = exported["unet"]
    img, _ = disk(83, 61, np.random.default_rng(3))
    with torch.inference_mode():
        prob, _ = ckpt.build_pipeline()(torch.from_numpy(img)[None, None])
        thr = float(prob.median())  # a random tiny net: put the threshold where the mask is non-trivial
        _, want = ckpt.build_pipeline(threshold=thr)(torch.from_numpy(img)[None, None])
    model = export_onnx(ckpt, tmp_path / "model.onnx", threshold=thr, example_shape=EXPORT_SHAPE)
    np.save(tmp_path / "img.npy", img)
    (tmp_path / "client.py").write_text(CLIENT)
    run = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "client.py"),
            str(model),
            str(tmp_path / "img.npy"),
            str(tmp_path / "mask.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"threshold": thr, "prob": "float32", "mask": "uint8"}
    got = np.load(tmp_path / "mask.npy")
    assert got.shape == img.shape and 0.2 < want.float().mean() < 0.8
    assert np.array_equal(got, want[0, 0].numpy())


# ---------------------------------------------------------------- int8 and fp16


@pytest.fixture(scope="module")
def reduced(exported, tmp_path_factory):
    ckpt, files = exported["unet"]
    d = tmp_path_factory.mktemp("reduced")
    rng = np.random.default_rng(5)
    calib = [disk(64, 64, rng)[0] for _ in range(4)]
    return ckpt, {
        "onnx": files["onnx"],
        "onnx-fp16": convert_fp16(files["onnx"], d / FILES["onnx-fp16"]),
        "onnx-int8": quantize_int8(files["onnx"], d / FILES["onnx-int8"], calib),
    }


def test_int8_is_static_qdq_on_the_network_only(reduced):
    _, files = reduced
    model = onnx.load(str(files["onnx-int8"]))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 10 and ops.count("DequantizeLinear") >= 10
    first = next(n for n in model.graph.node if INPUT_NAME in n.input)
    assert first.op_type != "QuantizeLinear"  # the uint8 pixels go into the float preprocessing, not a quantizer
    c = read_onnx_contract(files["onnx-int8"])
    assert c["precision"] == "int8" and c["quantization"]["format"] == "QDQ static"
    (last,) = c["quantization"]["float_nodes"]  # the logits layer stays float32
    node = next(n for n in model.graph.node if n.name == last)
    inits = {t.name: t for t in model.graph.initializer}
    assert node.op_type == "Conv" and inits[node.input[1]].data_type == onnx.TensorProto.FLOAT
    assert c["inputs"][0]["dtype"] == "uint8" and c["outputs"][0]["dtype"] == "float32"


def test_fp16_keeps_the_io_types_and_stores_float16_weights(reduced):
    _, files = reduced
    model = onnx.load(str(files["onnx-fp16"]))
    conv_w = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    types = {t.data_type for t in model.graph.initializer if t.name in conv_w}
    assert types == {onnx.TensorProto.FLOAT16}
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.UINT8]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.UINT8,
    ]
    assert read_onnx_contract(files["onnx-fp16"])["precision"] == "fp16"


def test_reduced_precision_is_judged_on_real_slices(reduced):
    ckpt, files = reduced
    rng = np.random.default_rng(9)
    pairs = [disk(64, 48, rng) for _ in range(3)]
    real = RealSlices([p[0] for p in pairs], [p[1] for p in pairs], "synthetic disks")
    reduced_only = {k: v for k, v in files.items() if k != "onnx"}
    only_random = verify(ckpt, reduced_only, check_shape=(1, 1, 30, 30))
    assert {r.name: r.status for r in only_random.results} == {"onnx-fp16": "not_judged", "onnx-int8": "not_judged"}
    report = verify(ckpt, files, real=real, check_shape=(1, 1, 30, 30))
    by = {r.name: r for r in report.results}
    for name in ("onnx-fp16", "onnx-int8"):
        c = by[name].checks[-1]
        assert c["n_labelled"] == 3 and c["dice_change"] is not None and 0 <= c["mask_differ_fraction"] <= 1
    assert by["onnx-int8"].checks[-1]["prob_max_abs"] > 0  # it is quantized
    # with a limit no quantized model meets, the same figures fail
    strict = {**verify_mod.TOLERANCES, "onnx-int8": Tolerance(judge_random=False, max_mask_fraction=-1.0)}
    assert not verify(
        ckpt, {"onnx-int8": files["onnx-int8"]}, real=real, check_shape=(1, 1, 8, 8), tolerances=strict
    ).ok


@pytest.mark.cuda
def test_fp16_and_fp32_on_cuda(reduced):
    ckpt, files = reduced
    rng = np.random.default_rng(9)
    pairs = [disk(64, 48, rng) for _ in range(3)]
    report = verify(ckpt, files, real=RealSlices([p[0] for p in pairs], [p[1] for p in pairs]), device="cuda")
    assert report.ok, report.summary()


# ---------------------------------------------------------------- the command


def _run(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_cli_all_formats_from_the_newest_run(tmp_path, msd_dir):
    runs = tmp_path / "runs"
    ckpt = make_checkpoint("baseline")
    ckpt.save(runs / "baseline-w4-20260101-000000" / "checkpoints" / "best.pt")
    res = _run(
        [
            "latest",
            "--runs-dir",
            str(runs),
            "--export-shape",
            "1x1x64x64",
            "--check-shape",
            "2x1x70x45",
            "--int8",
            "--fp16",
            "--calibration",
            str(msd_dir),
            "--calibration-count",
            "3",
            "--validation-count",
            "2",
        ]
    )
    assert res.exit_code == 0, res.output
    assert "CHECKPOINT latest: the newest run's best" in res.output and "best.pt" in res.output
    out = runs / "baseline-w4-20260101-000000" / "export"
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES.values(), PARITY_FILE])
    parity = json.loads((out / PARITY_FILE).read_text())
    assert parity["ok"] is True and parity["checkpoint_sha256"] == file_sha256(
        runs / "baseline-w4-20260101-000000" / "checkpoints" / "best.pt"
    )
    assert {r["name"] for r in parity["results"]} == set(FILES)
    for r in parity["results"]:
        assert r["status"] == "pass", r
        assert [c["inputs"] for c in r["checks"]] == ["random 2x1x70x45", "real 2 slices 256x256"]
        assert {"prob_max_abs", "prob_rel_l2", "mask_pixels_differ", "dice_change"} <= set(r["checks"][1])
    assert set(parity["files"]) == set(FILES) and parity["export"]["opset"] == 18


def test_cli_exits_1_when_out_of_tolerance(tmp_path, monkeypatch):
    ckpt = make_checkpoint("baseline")
    ckpt.save(tmp_path / "c.pt")
    monkeypatch.setitem(verify_mod.TOLERANCES, "onnx-fp32", Tolerance(prob_atol=0.0, prob_rel_l2=0.0))
    res = _run(
        [
            str(tmp_path / "c.pt"),
            "--format",
            "onnx",
            "--out",
            str(tmp_path / "o"),
            "--export-shape",
            "1x1x32x32",
            "--check-shape",
            "1x1x40x40",
        ]
    )
    assert res.exit_code == 1, res.output
    assert "OUT OF TOLERANCE" in res.output and "> atol 0" in res.output
    assert json.loads((tmp_path / "o" / PARITY_FILE).read_text())["ok"] is False


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    good = make_checkpoint("baseline")
    good.save(tmp / "good.pt")
    (tmp / "corrupt.pt").write_bytes(b"\x80\x02 this is not a torch file")
    torch.save({"state_dict": create_model("baseline", width=4).state_dict(), "epoch": 1}, tmp / "foreign.pt")
    wrong = make_checkpoint("baseline")
    wrong.state_dict = {**wrong.state_dict, "extra.weight": torch.zeros(1)}
    wrong.save(tmp / "extra_keys.pt")
    d = good.to_dict()
    d["surprise"] = 1
    torch.save(d, tmp / "extra_top_key.pt")
    (tmp / "a_file").write_text("x")
    out = ["--out", str(tmp / "out")]
    return {
        "missing": ([str(tmp / "nope.pt"), *out], "checkpoint not found"),
        "corrupt": ([str(tmp / "corrupt.pt"), *out], "not a loadable checkpoint"),
        "foreign": ([str(tmp / "foreign.pt"), *out], "not a liverseg checkpoint"),
        "unexpected state_dict keys": ([str(tmp / "extra_keys.pt"), *out], "weights do not fit"),
        "unexpected top-level key": ([str(tmp / "extra_top_key.pt"), *out], "unexpected key"),
        "folder as checkpoint": ([str(tmp), *out], "is a folder"),
        "unwritable output": ([str(tmp / "good.pt"), "--out", str(tmp / "a_file" / "sub")], "not writable"),
        "output is a file": ([str(tmp / "good.pt"), "--out", str(tmp / "a_file")], "is a file"),
        "opset too new": ([str(tmp / "good.pt"), "--opset", "99", *out], "opset 99 cannot be produced"),
        "opset too old": ([str(tmp / "good.pt"), "--opset", "9", *out], "supported:"),
        "no run to take": (["latest", "--runs-dir", str(tmp / "no_runs"), *out], "CHECKPOINT latest: no"),
        "int8 without data": ([str(tmp / "good.pt"), "--int8", *out], "--calibration"),
        "bad shape": ([str(tmp / "good.pt"), "--check-shape", "3x512", *out], "check-shape"),
        "cuda without a GPU": ([str(tmp / "good.pt"), "--device", "cuda", *out], "no CUDA device"),
        "bad calibration data": (
            [str(tmp / "good.pt"), "--int8", "--calibration", str(tmp / "a_file"), *out],
            "a_file",
        ),
    }


BAD_IDS = [
    "missing",
    "corrupt",
    "foreign",
    "unexpected state_dict keys",
    "unexpected top-level key",
    "folder as checkpoint",
    "unwritable output",
    "output is a file",
    "opset too new",
    "opset too old",
    "no run to take",
    "int8 without data",
    "bad shape",
    "bad calibration data",
    "cuda without a GPU",
]


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_input_is_one_line_exit_2_and_writes_no_model(tmp_path, case):
    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    args, needle = _bad_inputs(tmp_path)[case]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, (res.output, res.exception)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    # one line: "error: ..." from liverseg's Command, or "Error: ..." from click's own option checks
    error_lines = [ln for ln in lines if ln.startswith(("error:", "Error:"))]
    assert len(error_lines) == 1 and needle in error_lines[0], res.output
    assert "Traceback" not in res.output
    written = [
        p
        for p in tmp_path.rglob("*")
        if p.suffix in (".onnx", ".json") or p.name.endswith(".torchscript.pt") or ".tmp" in p.name
    ]
    assert written == [], written


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    import liverseg.export.onnx as onnx_mod

    ckpt = make_checkpoint("baseline")

    def broken(*a, **k):
        raise ExportError("onnx.checker rejected the exported model: injected")

    monkeypatch.setattr(onnx_mod, "check_and_load", broken)
    (tmp_path / "model.onnx").write_bytes(b"previous good model")
    with pytest.raises(ExportError, match="injected"):
        export_onnx(ckpt, tmp_path / "model.onnx", example_shape=(1, 1, 32, 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert (tmp_path / "model.onnx").read_bytes() == b"previous good model"


def test_supported_opsets_export_and_run(tmp_path):
    ckpt = make_checkpoint("baseline")
    ops = supported_opsets()
    for opset in (ops.start, ops.stop - 1):
        p = export_onnx(ckpt, tmp_path / f"m{opset}.onnx", opset=opset, example_shape=(1, 1, 32, 32))
        assert onnx.load(str(p)).opset_import[0].version == opset
        assert verify(ckpt, {"onnx": p}, check_shape=(2, 1, 37, 50)).ok


@pytest.mark.slow
def test_dynamo_exporter(tmp_path):
    ckpt = make_checkpoint("baseline")
    p = export_onnx(ckpt, tmp_path / "m.onnx", exporter="dynamo", example_shape=(1, 1, 64, 64))
    report = verify(ckpt, {"onnx": p}, check_shape=(3, 1, 50, 77))
    assert report.ok, report.summary()
    dims = [d.dim_param for d in onnx.load(str(p)).graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["N", "", "H", "W"]
