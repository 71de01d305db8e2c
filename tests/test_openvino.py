"""The OpenVINO engine beside ONNX Runtime, the engine/precision choice (``auto``) and its record.

OpenVINO tests skip with a reason when the extra (``liverseg[openvino]``) is absent;
the tests of the choice rule and of the missing-extra message run everywhere.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from test_infer import _checkpoint, _study_layout  # the tests folder is on sys.path

from liverseg.core.choose import CPU_ORDER, DEFAULT_ORDER, choose, onnx_metadata
from liverseg.core.contract import file_sha256
from liverseg.core.engine import (
    CPU_FLAGS_ENV,
    OPENVINO_MISSING,
    EngineOptions,
    cpu_class,
    cpu_flags,
    cpuinfo_flags,
    open_engine,
    openvino_available,
)
from liverseg.core.errors import UsageError
from liverseg.infer.cli import main as infer_main
from liverseg.predict.model import open_session

needs_openvino = pytest.mark.skipif(
    not openvino_available(), reason="OpenVINO is not installed (pip install 'liverseg[openvino]')"
)


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


def test_liverseg_cpu_flags_simulates_another_cpu(files, monkeypatch):
    """$LIVERSEG_CPU_FLAGS replaces /proc/cpuinfo's flags for the choice (and says so); unset, the hardware's."""
    monkeypatch.delenv(CPU_FLAGS_ENV, raising=False)
    assert cpu_flags() == cpuinfo_flags()
    real = cpu_class()
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2, fma avx512f,avx512_vnni,avx512_bf16")
    assert cpu_flags() == {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"} and cpu_class() == "avx512_vnni"
    chosen = choose(files, openvino=True, gpu=False, contract=_contract())
    assert chosen.cpu_class == "avx512_vnni" and "on this avx512_vnni CPU" in chosen.reason
    assert f"simulated avx512_vnni CPU ({CPU_FLAGS_ENV}); this one is {real}" in chosen.notes[-1]
    assert not choose(files, flags=AVX2, openvino=True, gpu=False, contract=_contract()).notes  # flags given: no note
    monkeypatch.setenv(CPU_FLAGS_ENV, "none")
    assert cpu_flags() == frozenset() and cpu_class() == "basic"
    monkeypatch.setenv(CPU_FLAGS_ENV, "")
    assert cpu_flags() == cpuinfo_flags()


@needs_openvino
def test_a_simulated_cpu_keeps_the_hardwares_compiled_models(tiny_model, monkeypatch):
    from liverseg.core.engine import OpenVinoEngine

    monkeypatch.delenv(CPU_FLAGS_ENV, raising=False)
    key = OpenVinoEngine.cache_key(tiny_model, "fp32")
    monkeypatch.setenv(CPU_FLAGS_ENV, ",".join(AMX))
    assert OpenVinoEngine.cache_key(tiny_model, "fp32") == key  # compiled for this CPU, whatever is simulated


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


# ------------------------------------------------------------------ the auto rule

AMX = frozenset({"avx2", "avx512f", "avx512_vnni", "amx_bf16", "amx_tile"})
AVX2 = frozenset({"avx2", "fma"})


def _contract(**gates: bool) -> dict:
    """Gates as the export writes them: judged ones carry their Dice change (over the limit where failed)."""
    return {
        "precision": "fp32",
        "gates": {k.replace("__", "/"): {"passed": v, "dice_change": 0.0 if v else -0.02} for k, v in gates.items()},
    }


@pytest.fixture
def files(tmp_path) -> Path:
    for name in ("model.onnx", "model.int8.onnx"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path / "model.onnx"


def test_auto_takes_the_fastest_gated_combination_for_the_cpu(files):
    def pick(flags, ov=True, **kw):
        c = choose(files, flags=flags, openvino=ov, gpu=False, **kw)
        return c.engine, c.precision, c.path.name

    passed = _contract(openvino__int8=True, openvino__bf16=True, onnxruntime__int8=True)
    assert pick(AMX, contract=passed) == ("openvino", "int8", "model.int8.onnx")
    no_int8 = _contract(openvino__int8=False, openvino__bf16=True, onnxruntime__int8=False)
    assert pick(AMX, contract=no_int8) == ("openvino", "bf16", "model.onnx")
    ungated = choose(files, flags=AMX, openvino=True, gpu=False, contract=_contract())
    assert (ungated.engine, ungated.precision) == ("openvino", "fp32")
    assert "no accuracy gate measured" in ungated.reason and ungated.gated is None
    # without the extra: ONNX Runtime, and a one-line hint where OpenVINO is measured much faster (AMX only)
    bare = choose(files, flags=AMX, openvino=False, gpu=False, contract=passed)
    assert (bare.engine, bare.precision) == ("onnxruntime", "int8") and bare.gated is True
    assert any("pip install 'liverseg[openvino]'" in n for n in bare.notes)
    assert not choose(files, flags=AVX2, openvino=False, gpu=False, contract=passed).notes
    # AVX2 only: OpenVINO int8, else ONNX Runtime int8, only when gated; fp32 on ONNX Runtime
    assert pick(AVX2, contract=passed) == ("openvino", "int8", "model.int8.onnx")
    assert pick(AVX2, contract=_contract(onnxruntime__int8=True)) == ("onnxruntime", "int8", "model.int8.onnx")
    assert pick(AVX2, contract=_contract()) == ("onnxruntime", "fp32", "model.onnx")
    failed = choose(files, flags=AVX2, openvino=False, gpu=False, contract=_contract(onnxruntime__int8=False))
    assert (failed.engine, failed.precision) == ("onnxruntime", "fp32") and "failed its gate" in failed.reason
    unjudged = {"precision": "fp32", "gates": {"onnxruntime/int8": {"passed": False, "dice_change": None}}}
    not_judged = choose(files, flags=AVX2, openvino=False, gpu=False, contract=unjudged)
    assert not_judged.precision == "fp32" and "gate not judged" in not_judged.reason
    # asked for: used, and the note says it was not gated
    bf16 = choose(files, flags=AVX2, openvino=True, gpu=False, precision="bf16", contract=_contract())
    assert (bf16.engine, bf16.precision) == ("openvino", "bf16") and "no accuracy gate" in bf16.notes[0]
    with pytest.raises(UsageError, match="liverseg\\[openvino\\]"):
        choose(files, engine="openvino", openvino=False, contract=_contract())
    with pytest.raises(UsageError, match="nothing on this"):
        choose(files, engine="onnxruntime", precision="bf16", flags=AVX2, openvino=True, gpu=False, contract={})
    gpu = choose(files, flags=AMX, openvino=True, gpu=True, contract=passed)
    assert (gpu.engine, gpu.precision, gpu.device) == ("onnxruntime", "fp32", "auto")


# One row per simulated CPU class of the CI machines (and one without any of the flags): the first gated
# combination, written out by hand from choose.CPU_ORDER's measurements, with the extra and without it.
SIMULATED = {
    "avx2": (AVX2, "avx2"),  # AMD Zen 3
    "avx512_vnni": (frozenset({"avx2", "fma", "avx512f", "avx512_vnni"}), "avx512_vnni"),
    "bf16": (frozenset({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}), "avx512_vnni"),  # AMD Zen 4
    "amx": (AMX | {"amx_int8", "avx512_bf16"}, "amx"),  # Intel Xeon Sapphire Rapids and later
    "basic": (frozenset({"sse4_2"}), "basic"),  # none of them, or no /proc/cpuinfo
}
# class -> (all gated, nothing gated, all gated without OpenVINO)
FIRST = {
    "avx2": (("openvino", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")),
    "avx512_vnni": (("openvino", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")),
    "amx": (("openvino", "int8"), ("openvino", "fp32"), ("onnxruntime", "int8")),
    "basic": (("openvino", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")),
}


@pytest.mark.cpu_class
@pytest.mark.parametrize("name", SIMULATED)
def test_every_cpu_class_takes_its_own_first_gated_combination(files, name, monkeypatch):
    """Each branch of the rule on any machine: the class simulated through $LIVERSEG_CPU_FLAGS, as CI does."""
    flags, klass = SIMULATED[name]
    monkeypatch.setenv(CPU_FLAGS_ENV, ",".join(sorted(flags)))
    assert cpu_class() == klass

    def pick(contract, ov=True):
        c = choose(files, openvino=ov, gpu=False, contract=contract)
        assert c.cpu_class == klass and f"on this {klass} CPU" in c.reason
        return c.engine, c.precision

    every = _contract(openvino__int8=True, openvino__bf16=True, onnxruntime__int8=True)
    gated, ungated, bare = FIRST[klass]
    assert pick(every) == gated and pick(_contract()) == ungated and pick(every, ov=False) == bare
    # speeds an older export recorded in its gates (the shipped model's, timed on AVX2) order nothing
    timed = _contract(openvino__int8=True, openvino__bf16=True, onnxruntime__int8=True, onnxruntime__fp32=True)
    speeds = {"openvino/bf16": 90.0, "openvino/int8": 70.0, "onnxruntime/int8": 60.0, "onnxruntime/fp32": 30.0}
    for key, ips in speeds.items():
        timed["gates"][key].update(cpu_class=klass, images_per_second_512=ips, images_per_second_at_spacing=ips)
    assert pick(timed) == gated


def test_onnx_metadata_reads_the_contract_without_loading(tiny_model):
    assert onnx_metadata(tiny_model) == open_engine(tiny_model).metadata()


# ------------------------------------------------------------------ the runner's session and liverseg-infer


@needs_openvino
def test_session_runs_either_engine_with_equal_masks(tiny_model):
    x = _batch(3, 40, 56)
    ort = open_session(tiny_model, device="cpu", engine="onnxruntime", require_probability=True)
    ov = open_session(tiny_model, device="cpu", engine="openvino", precision="fp32", require_probability=True)
    assert ort.providers == ["CPUExecutionProvider"] and ov.providers == ["OpenVINO CPU fp32"]
    assert ov.engine_name == "openvino" and ov.choice["engine"] == "openvino" and ov.choice["precision"] == "fp32"
    assert ov.notes[0].startswith("engine: openvino fp32 on cpu")
    m_ort, p_ort = ort.run(x, probability=True)
    m_ov, p_ov = ov.run(x, probability=True)
    assert np.array_equal(m_ov, m_ort)
    assert p_ov is not None and p_ort is not None and np.abs(p_ov - p_ort).max() < 1e-5


@needs_openvino
@pytest.mark.cpu_class
def test_infer_cli_engine_choice_is_recorded(tiny_model, tmp_path):
    import json

    from click.testing import CliRunner

    src = _study_layout(tmp_path / "study", n=2) / "data" / "Images"
    out = tmp_path / "o"
    args = [str(src), "--model", str(tiny_model), "--out", str(out), "--device", "cpu", "--no-report"]
    r = CliRunner().invoke(infer_main, [*args, "--engine", "openvino", "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["engine"] == "openvino" and s["precision"] == "fp32" and s["providers"] == ["OpenVINO CPU fp32"]
    assert s["engine_choice"]["reason"] and s["engine_choice"]["cpu_class"] == cpu_class()
    auto = tmp_path / "auto"
    r = CliRunner().invoke(infer_main, [*args[:4], str(auto), *args[5:]])
    assert r.exit_code == 0, r.output
    a = json.loads((auto / "summary.json").read_text())
    assert a["engine_choice"]["engine"] == a["engine"] and "engine:" in r.output
    chosen = choose(tiny_model, device="cpu")  # this CPU class's rule (OpenVINO fp32 on AMX, ONNX Runtime elsewhere)
    assert (a["engine"], a["precision"], a["engine_choice"]["cpu_class"]) == (chosen.engine, "fp32", cpu_class())
    for name in ("000_pred.png", "001_pred.png"):  # OpenVINO fp32 and the auto choice write the same masks
        assert (out / "masks" / name).read_bytes() == (auto / "masks" / name).read_bytes()


# ------------------------------------------------------------------ benchmark rows


def test_bf16_matmul_rate_is_reported_beside_fp32_not_as_the_peak():
    from liverseg.benchmarks.peak import matmul_peak

    p = matmul_peak(n=128, repeats=1)
    assert p["torch_bf16_gflops"] > 0 and p["torch_gflops"] > 0
    assert p["peak_gflops"] == max(p["numpy_gflops"], p["torch_gflops"])


def test_bench_rows_for_openvino_and_bf16_autocast(tmp_path, monkeypatch):
    from test_benchmarks import _tiny_opts

    from liverseg.benchmarks import backends as bk
    from liverseg.benchmarks.bench import Bench

    names = ["eager", "ort-fp32", "eager-bf16", "ov-fp32", "ov-bf16"]
    if not openvino_available():  # the rows run and record why they could not
        monkeypatch.setattr(bk, "openvino_available", lambda: False)
    opts = _tiny_opts(tmp_path, names, cases=[bk_case(4, 48, 1)])
    rows = {r["backend"]: r for r in Bench(opts, log=lambda s: None, argv=["liverseg-bench"]).run()["rows"]}
    assert set(names) <= set(rows)
    assert rows["eager-bf16"]["error"] == "" and rows["eager-bf16"]["precision"] == "bf16"
    if openvino_available():
        for name in ("ov-fp32", "ov-bf16"):
            r = rows[name]
            assert r["error"] == "" and r["images_per_s"] > 0 and r["engine"] == "openvino", r["error"]
            assert r["provider"].startswith("OpenVINO CPU")
        assert rows["ov-fp32"]["parity_mask_px_diff"] <= 2 and rows["ov-fp32"]["parity_max_abs_prob"] < 1e-4
    else:
        assert "liverseg[openvino]" in rows["ov-fp32"]["error"]


def test_ov_rows_without_the_extra_record_the_install_command(tmp_path, monkeypatch):
    from test_benchmarks import _tiny_opts

    from liverseg.benchmarks import backends as bk
    from liverseg.benchmarks.bench import Bench

    monkeypatch.setattr(bk, "openvino_available", lambda: False)
    opts = _tiny_opts(tmp_path, ["ov-int8"], cases=[bk_case(4, 48, 1)])
    rows = Bench(opts, log=lambda s: None, argv=["liverseg-bench"]).run()["rows"]
    assert rows and all("pip install 'liverseg[openvino]'" in r["error"] for r in rows)


def bk_case(width: int, size: int, batch: int):
    from liverseg.benchmarks.bench import Case

    return Case(width, size, batch)


# ------------------------------------------------------------------ accuracy gates


def test_engine_gates_rows_go_into_the_contract_and_guide_auto(tmp_path):
    from test_infer import _slice

    from liverseg.export.onnx import export_onnx, update_contract
    from liverseg.export.quantize import quantize_int8
    from liverseg.export.verify import GATE_MIN_SLICES, RealSlices, engine_gates, gates_for_contract

    rng = np.random.default_rng(0)
    pairs = [_slice(rng) for _ in range(GATE_MIN_SLICES)]
    real = RealSlices([p[0] for p in pairs], [p[1] for p in pairs], "synthetic")
    fp = export_onnx(_checkpoint(), tmp_path / "model.onnx", example_shape=(1, 1, 64, 64))
    q = quantize_int8(fp, tmp_path / "model.int8.onnx", real.images[:4])
    rows = engine_gates(fp, real, int8_onnx=q, threads=1)
    by = {(r["engine"], r["precision"]): r for r in rows}
    assert set(by) == {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16"),
                       ("openvino", "int8")}  # fmt: skip
    ref = by["onnxruntime", "fp32"]
    assert ref["passed"] and ref["dice_change"] == 0 and ref["mask_pixels_changed"] == 0 and ref["n_labelled"] == 16
    i8 = by["onnxruntime", "int8"]
    assert i8["passed"] == (i8["dice_change"] >= -0.005) and i8["file"] == "model.int8.onnx"
    if openvino_available():
        assert by["openvino", "fp32"]["passed"] and by["openvino", "fp32"]["mask_pixels_changed"] <= 2
        bf16 = by["openvino", "bf16"]
        if bf16["ran_as"] != "bf16":  # a CPU without bf16 arithmetic: recorded, not passed
            assert not bf16["passed"] and "was not measured" in bf16["reason"]
    else:
        assert not by["openvino", "fp32"]["passed"] and "not installed" in by["openvino", "fp32"]["reason"]
    few = engine_gates(fp, RealSlices(real.images[:4], real.masks[:4]), rows=(("onnxruntime", "fp32"),))
    assert not few[0]["passed"] and "fewer than 16" in few[0]["reason"]
    # the row records the CPU's class it was judged on, and no speed (auto orders engines by CPU class alone)
    assert ref["cpu_class"] == cpu_class() and not any("per_second" in k for k in ref)
    # into the contract: auto takes int8 on this AVX2 rule only where its gate passed
    gates = gates_for_contract(rows)
    update_contract(fp, variants={"int8": {"file": q.name}}, gates=gates)
    contract = json.loads(onnx_metadata(fp)["liverseg.contract"])
    assert contract["gates"]["onnxruntime/int8"]["passed"] == i8["passed"] and contract["variants"]["int8"]
    chosen = choose(fp, flags=AVX2, openvino=False, gpu=False)
    assert (chosen.engine, chosen.precision) == ("onnxruntime", "int8" if i8["passed"] else "fp32")
    sess = open_session(fp, device="cpu", engine="onnxruntime", precision="fp32")  # the updated contract still loads
    assert sess.contract["gates"] == contract["gates"]


@pytest.mark.realdata
def test_export_cli_gates_on_16_real_slices(tmp_path, msd_dir):
    from click.testing import CliRunner

    from liverseg.export.cli import main as export_main

    ckpt = _checkpoint()
    ckpt.save(tmp_path / "c.pt")
    out = tmp_path / "export"
    args = [str(tmp_path / "c.pt"), "--format", "onnx", "--out", str(out), "--export-shape", "1x1x64x64"]
    args += ["--check-shape", "1x1x40x40", "--int8", "--calibration", str(msd_dir), "--calibration-count", "4"]
    res = CliRunner().invoke(export_main, [*args, "--validation-count", "16"], catch_exceptions=False)
    assert res.exit_code in (0, 1), res.output  # random weights: int8 may miss its parity tolerance
    parity = json.loads((out / "parity.json").read_text())
    gates = {(g["engine"], g["precision"]): g for g in parity["gates"]}
    assert gates["onnxruntime", "fp32"]["n_labelled"] == 16 and gates["onnxruntime", "fp32"]["passed"]
    assert {"prob_max_abs", "mask_pixels_changed", "dice_change"} <= set(gates["onnxruntime", "int8"])
    for name in ("model.onnx", "model.int8.onnx"):
        contract = json.loads(onnx_metadata(out / name)["liverseg.contract"])
        assert contract["variants"] == {"int8": {"file": "model.int8.onnx"}}
        assert contract["gates"]["onnxruntime/int8"]["passed"] == gates["onnxruntime", "int8"]["passed"]
    assert parity["files"]["onnx"]["sha256"] == file_sha256(out / "model.onnx")  # hashed after the contract update


@pytest.mark.realdata
@pytest.mark.cpu_class
def test_e2e_rows_for_auto_and_openvino(chaos_dir, tmp_path):
    from liverseg.benchmarks.artifacts import Artifacts, random_checkpoint
    from liverseg.benchmarks.e2e import run_e2e

    art = Artifacts(random_checkpoint("unet", 4), tmp_path / "m")
    names = ["auto", "ov-fp32"] if openvino_available() else ["auto"]
    rows = run_e2e(art, names, threads=2, slices=2, rounds=1, data_dir=chaos_dir.parent, workdir=tmp_path / "e2e")
    for r in rows:
        assert r["error"] == "", r["error"]
        assert r["model_only_images_per_s"] > 0 and r["e2e_images_per_s"] > 0 and r["engine_choice"]
    assert rows[0]["device"] == "auto"
    if openvino_available():
        assert rows[1]["engine_choice"].startswith("openvino fp32") and rows[1]["provider"] == "OpenVINO CPU fp32"


@pytest.mark.cpu_class
def test_onnx_metadata_refuses_what_is_not_a_model_and_the_session_says_why(tmp_path):
    from liverseg.core.errors import ContractError

    zeros = tmp_path / "zeros.onnx"
    zeros.write_bytes(bytes(1 << 20))
    with pytest.raises(ContractError, match="not a protobuf message"):
        onnx_metadata(zeros)
    # the engine auto takes for an ungated file on this CPU class (OpenVINO fp32 on AMX) says why, in its own words
    order = CPU_ORDER.get(cpu_class(), DEFAULT_ORDER)
    engine = next(e for e, p in order if p == "fp32" and (e == "onnxruntime" or openvino_available()))
    with pytest.raises(ContractError, match=f"{'OpenVINO' if engine == 'openvino' else engine} cannot load it"):
        open_session(zeros, device="cpu")


@needs_openvino
def test_the_int8_file_is_not_reported_as_falling_back_to_fp32(tiny_model, tmp_path):
    """OpenVINO's precision hint says fp32 for a QDQ model whose Q/DQ layers run in int8: the note says int8."""
    from liverseg.export.quantize import quantize_int8

    q = quantize_int8(tiny_model, tmp_path / "model.int8.onnx", [b[0] for b in _batch(4, 64, 64)])
    eng = open_engine(q, EngineOptions(precision="int8"), engine="openvino")
    note = " ".join(eng.notes)
    assert "precision int8 (QDQ file)" in note and "-> fp32" not in note
