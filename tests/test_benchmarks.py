"""liverseg.benchmarks: well-formed rows, errors recorded instead of raised, FLOPs counted right.

Everything runs a width-4 U-Net on 32-64 px images with one round, so the file
stays fast on 2 cores.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from liverseg.benchmarks import backends as bk
from liverseg.benchmarks.bench import COLUMNS, Bench, BenchOptions, Case
from liverseg.benchmarks.flops import count_flops, model_gflop_per_image
from liverseg.benchmarks.report import check_targets, markdown, write_results

# ------------------------------------------------------------------ FLOPs


def test_flops_match_reference_numbers():
    # 384.7 GFLOP (width 64) and 24.1 (width 16) per 512x512 slice, counted by hand from the layers.
    assert model_gflop_per_image("unet", {"width": 64}, 512) == pytest.approx(384.7, rel=1e-3)
    assert model_gflop_per_image("unet", {"width": 16}, 512) == pytest.approx(24.1, rel=2e-3)
    # cost scales with pixels: a 256x256 slice is a quarter
    assert model_gflop_per_image("unet", {"width": 16}, 256) == pytest.approx(24.11 / 4, rel=2e-3)


def test_flops_by_hand():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),  # 8*10*10 outputs * 3*9 MACs
        torch.nn.ConvTranspose2d(8, 4, 2, stride=2),  # 8*10*10 inputs * 4*4 MACs
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 20 * 20, 5),
    )
    fc = count_flops(net, (2, 3, 10, 10))
    conv = 2 * 2 * 8 * 10 * 10 * 3 * 9
    convt = 2 * 2 * 8 * 10 * 10 * 4 * 4
    lin = 2 * 2 * 5 * 1600
    assert fc.by_type == {"Conv2d": conv, "ConvTranspose2d": convt, "Linear": lin}
    assert fc.total == conv + convt + lin and fc.per_image == fc.total / 2


# ------------------------------------------------------------------- peak


def test_matmul_peak_records_errors():
    from liverseg.benchmarks.peak import matmul_peak

    p = matmul_peak(n=128, repeats=1, libraries=("numpy", "torch", "nope"))
    assert p["numpy_gflops"] > 0 and p["torch_gflops"] > 0
    assert p["peak_gflops"] == max(p["numpy_gflops"], p["torch_gflops"])
    assert "nope" in p["errors"]


def test_int8_and_bf16_rates_sit_beside_the_fp32_peak_and_rows_get_their_own():
    from liverseg.benchmarks.bench import rate_of
    from liverseg.benchmarks.peak import matmul_peak

    p = matmul_peak(n=256, repeats=1, libraries=("numpy", "ort_int8"))
    assert p["ort_int8_gflops"] > 0 and p["peak_gflops"] == p["numpy_gflops"]  # int8 is never the fp32 peak
    assert rate_of({"precision": "int8-qdq", "provider": "CPUExecutionProvider"}) == "int8"
    assert rate_of({"precision": "int8", "provider": "OpenVINO CPU int8"}) == "int8"
    assert rate_of({"precision": "bf16", "provider": "torch-cpu"}) == "bf16"
    assert rate_of({"precision": "bf16", "provider": "OpenVINO CPU fp32"}) == "fp32"  # the hint ran as fp32
    assert rate_of({"precision": "fp32", "provider": "CPUExecutionProvider"}) == "fp32"


@pytest.mark.cpu_class
def test_machine_stamp():
    from liverseg.benchmarks import machine
    from liverseg.core.engine import cpu_flags, cpuinfo_flags, simulated_cpu_flags

    st = machine.stamp(["liverseg-bench", "--quick"])
    assert st["cores"] >= 1 and st["cpu_model"] and st["machine_kind"]
    assert st["command"] == "liverseg-bench --quick"
    assert "torch" in st["versions"] and "onnxruntime" in st["versions"]
    assert " " not in st["machine_kind"] and "/" not in st["machine_kind"]
    # the flags the engine choice saw (a simulated CPU's under LIVERSEG_CPU_FLAGS) beside the hardware's
    assert set(st["isa_flags"]) == set(machine.ISA_FLAGS) & cpu_flags()
    assert set(st["hardware_isa_flags"]) == set(machine.ISA_FLAGS) & cpuinfo_flags()
    simulated = simulated_cpu_flags() is not None
    assert st["isa_flags_simulated"] is simulated and ("-as-" in st["machine_kind"]) is simulated


# ----------------------------------------------------------- bench rows


class Broken(bk.Backend):
    """A backend that sets up but fails on every call: its row must carry the error."""

    engine = "test"
    needs = "checkpoint"

    def __init__(self, path, threads=None, *, name="broken"):
        super().__init__(path, threads)
        self.name = name

    def setup(self):
        self.provider = "nowhere"

    def run(self, prepared):
        raise MemoryError("simulated out of memory")


def _tiny_opts(tmp_path, backends, **kw):
    base = dict(
        cases=[Case(4, 48, 1), Case(4, 48, 2)],
        backends=backends,
        rounds=2,
        warmup=1,
        peak_n=128,
        peak_repeats=1,
        memory=False,
        e2e=False,
        scaling=(),
        calibration_slices=2,
        real_data=False,
        workdir=tmp_path,
    )
    base.update(kw)
    return BenchOptions(**base)


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    """One tiny run shared by the row and report tests: eager, ORT fp32, and a backend that always fails."""
    tmp = tmp_path_factory.mktemp("bench")
    mp = pytest.MonkeyPatch()
    mp.setitem(bk.BACKENDS, "broken", bk.BackendDef("broken", Broken, "checkpoint"))
    try:
        opts = _tiny_opts(tmp, ["eager", "ort-fp32", "broken"], memory=True)
        res = Bench(opts, log=lambda s: None, argv=["liverseg-bench", "--test"]).run()
    finally:
        mp.undo()
    return res


def test_rows_are_well_formed(tiny_result):
    rows = tiny_result["rows"]
    measured = [r for r in rows if r["images_per_s"]]
    assert measured and all(r["rate_kind"] == "fp32" and r["rate_gflops"] == r["peak_gflops"] for r in measured)
    assert all(r["frac_of_rate"] == pytest.approx(r["frac_of_peak"]) for r in measured)
    assert [(r["backend"], r["batch"]) for r in rows] == [
        (b, n) for n in (1, 2) for b in ("eager", "ort-fp32", "broken")
    ]
    for r in rows:
        assert set(COLUMNS) <= set(r), set(COLUMNS) - set(r)
        assert r["section"] == "model" and r["size"] == 48 and r["width"] == 4
        assert r["gflop_per_image"] == pytest.approx(model_gflop_per_image("unet", {"width": 4}, 48))
        assert r["peak_gflops"] == tiny_result["peak"]["peak_gflops"] > 0
    good = [r for r in rows if r["backend"] != "broken"]
    for r in good:
        assert r["error"] == "", r["error"]
        assert r["images_per_s"] > 0 and r["rounds"] == 2
        assert r["latency_ms_p50"] <= r["latency_ms_p90"] <= r["latency_ms_p99"]
        assert r["images_per_s"] == pytest.approx(r["batch"] / (r["latency_ms_p50"] / 1e3))
        assert r["achieved_gflops"] == pytest.approx(r["gflop_per_image"] * r["images_per_s"])
        assert r["frac_of_peak"] == pytest.approx(r["achieved_gflops"] / r["peak_gflops"])
        assert r["peak_rss_mb"] > 10 and r["setup_rss_mb"] > 10
    ort = [r for r in good if r["backend"] == "ort-fp32"]
    for r in ort:
        # ORT fp32 runs the same pipeline as eager: probabilities agree to float rounding
        assert r["parity_px"] == r["rounds"] * r["batch"] * 48 * 48  # every timed round is compared
        assert r["parity_max_abs_prob"] < 1e-4
        assert r["parity_mask_px_diff"] <= 2
        assert r["dice_delta"] is not None and abs(r["dice_delta"]) < 0.05
        assert r["speedup_vs_eager"] > 0
        assert r["provider"] == "CPUExecutionProvider"


def test_failing_backend_is_recorded_not_raised(tiny_result):
    broken = [r for r in tiny_result["rows"] if r["backend"] == "broken"]
    assert len(broken) == 2
    for r in broken:
        assert "MemoryError: simulated out of memory" in r["error"]
        assert r["images_per_s"] is None and r["rounds"] is None


def test_ort_memory_probe_does_not_import_torch(tmp_path):
    from liverseg.benchmarks.artifacts import Artifacts, random_checkpoint
    from liverseg.benchmarks.bench import run_memprobe

    art = Artifacts(random_checkpoint("unet", 4), tmp_path)
    res = run_memprobe(
        {"backend": "ort-fp32", "path": str(art.path("onnx")), "threads": 1, "cases": [[32, 1], [64, 2]], "calls": 1}
    )
    assert "error" not in res, res
    assert res["torch_imported"] is False
    assert [(c["size"], c["batch"]) for c in res["cases"]] == [(32, 1), (64, 2)]
    assert all(c["peak_kb"] >= res["rss_start_kb"] for c in res["cases"])
    bad = run_memprobe({"backend": "ort-fp32", "path": str(tmp_path / "missing.onnx"), "cases": [[32, 1]]})
    assert bad.get("error") and not bad["cases"]


def test_unavailable_device_and_missing_export_become_errors(tmp_path, monkeypatch):
    """A GPU row without a GPU, and a file the export package cannot make: rows with errors, exit code 1."""
    import liverseg.benchmarks.artifacts as arts

    def no_int8(self):
        raise RuntimeError("quantizer exploded")

    monkeypatch.setattr(arts.Artifacts, "_make_int8", no_int8)
    names = ["ort-int8"] + (["ort-cuda-fp32"] if not torch.cuda.is_available() else [])
    res = Bench(_tiny_opts(tmp_path, names, cases=[Case(4, 32, 1)]), log=lambda s: None).run()
    by = {r["backend"]: r for r in res["rows"]}
    assert "quantizer exploded" in by["ort-int8"]["error"] and by["ort-int8"]["images_per_s"] is None
    if "ort-cuda-fp32" in by:
        assert "CUDA" in by["ort-cuda-fp32"]["error"]


def test_unknown_backend_is_a_row_error(tmp_path):
    res = Bench(_tiny_opts(tmp_path, ["nonesuch"], cases=[Case(4, 32, 1)]), log=lambda s: None).run()
    assert "unknown backend" in res["rows"][0]["error"]


# ----------------------------------------------------------------- report


def test_report_files(tiny_result, tmp_path):
    paths = write_results(tiny_result, tmp_path / "out", tag="test")
    assert {"csv", "md", "json", "latest", "png"} <= set(paths)
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(tiny_result["rows"])
    assert rows[0]["machine_kind"] and rows[0]["cpu_model"] and rows[0]["torch"] and rows[0]["date"]
    assert float(rows[0]["images_per_s"]) > 0
    assert any("MemoryError" in r["error"] for r in rows)
    md = paths["md"].read_text()
    assert "liverseg-bench --test" in md and "| ort-fp32 |" in md and "GFLOP/s" in md
    assert paths["latest"].read_text() == md
    assert paths["png"].stat().st_size > 1000 and paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(paths["json"].read_text())["stamp"]["cores"] >= 1


def _row(backend, ips, width=16, size=512, batch=1, frac=None):
    r: dict[str, Any] = {c: None for c in COLUMNS}
    r.update(
        {
            "section": "model",
            "model": "unet",
            "backend": backend,
            "width": width,
            "size": size,
            "batch": batch,
            "images_per_s": ips,
            "frac_of_peak": frac,
            "achieved_gflops": (frac or 0) * 100,
            "peak_gflops": 100.0,
            "error": "",
        }
    )
    return r


def test_targets_met_and_missed():
    res = {
        "rows": [_row("eager", 1.0), _row("ort-fp32", 2.0, frac=0.9), _row("ort-int8", 3.0)],
        "e2e": [
            {
                "backend": "ort-fp32",
                "width": 16,
                "weights": "x",
                "images": 78,
                "e2e_vs_model": 0.97,
                "e2e_images_per_s": 1.94,
                "model_only_images_per_s": 2.0,
                "dice": 0.9,
            },
            {
                "backend": "ort-int8",
                "width": 16,
                "weights": "x",
                "images": 78,
                "e2e_vs_model": 0.90,
                "e2e_images_per_s": 2.7,
                "model_only_images_per_s": 3.0,
                "dice": 0.89,
                "dice_delta_vs_fp32": -0.01,
            },
        ],
        "scaling": [{"inputs": 100, "peak_rss_mb": 100.0}, {"inputs": 10000, "peak_rss_mb": 105.0}],
    }
    got = [(x["value"], x["met"]) for x in check_targets(res)]
    assert (2.0, True) in got  # ORT / eager
    assert (0.9, True) in got  # fraction of peak
    assert (1.5, False) in got  # int8 / ORT
    assert (0.97, True) in got and (0.90, False) in got  # end to end
    assert (-0.01, False) in got  # int8 Dice change (trained weights)
    assert (1.05, True) in got  # memory growth
    assert len(got) == 7
    res["e2e"][1]["weights"] = "random (seeded)"
    assert (-0.01, None) in [(x["value"], x["met"]) for x in check_targets(res)]  # not judged on random weights
    md = markdown(
        {
            **res,
            "stamp": {
                "machine_kind": "k",
                "date": "d",
                "command": "c",
                "cpu_model": "m",
                "cores": 2,
                "isa_flags": [],
                "versions": {},
            },
            "peak": {},
        }
    )
    assert "**missed**" in md and "met" in md


# -------------------------------------------------------------- e2e, scaling, CLI


def test_scaling_rows(tmp_path):
    from liverseg.benchmarks.scaling import run_scaling

    rows = run_scaling([4, 8], width=4, size=32, threads=1, workdir=tmp_path)
    assert [r["inputs"] for r in rows] == [4, 8]
    for r in rows:
        assert r["error"] == "", r["error"]
        assert r["exit_code"] == 0 and r["n_ok"] == r["inputs"]
        assert r["images_per_s"] > 0 and 20 < r["peak_rss_mb"] < 4000
    assert rows[0]["rss_vs_smallest"] == 1.0


@pytest.mark.realdata
def test_e2e_on_real_slices(chaos_dir, tmp_path, monkeypatch):
    import liverseg.benchmarks.e2e as e2e_mod
    import liverseg.infer.runner as runner_mod
    from liverseg.benchmarks.artifacts import Artifacts, random_checkpoint
    from liverseg.benchmarks.e2e import run_e2e

    calls = []
    real = runner_mod.run_inference

    def counted(opts, log=None):
        calls.append(opts.limit)
        return real(opts, log)

    rates: dict[str, tuple[list[float], list[float]]] = {}  # backend -> (model-only, end-to-end) per round
    real_summarise = e2e_mod.summarise

    def summarise(row, model_rates, e2e_rates, summaries):
        rates[row["backend"]] = (list(model_rates), list(e2e_rates))
        real_summarise(row, model_rates, e2e_rates, summaries)

    monkeypatch.setattr(runner_mod, "run_inference", counted)
    monkeypatch.setattr(e2e_mod, "summarise", summarise)
    art = Artifacts(random_checkpoint("unet", 4), tmp_path / "m")
    lines: list[str] = []
    rows = run_e2e(
        art,
        ["ort-fp32", "auto"],
        threads=2,
        slices=2,
        rounds=2,
        data_dir=chaos_dir.parent,
        workdir=tmp_path / "e2e",
        log=lines.append,
    )
    assert calls == [2, 2, 2, 2, 2]  # the untimed warm-up over two slices, then the timed rounds
    assert sorted(p.name for p in (tmp_path / "e2e").iterdir()) == []  # no run's folder is left
    rounds = [line.split(":")[0].strip() for line in lines if " round " in line]
    assert rounds == ["e2e ort-fp32 round 1", "e2e auto round 1", "e2e ort-fp32 round 2", "e2e auto round 2"]
    r, auto = rows
    assert auto["error"] == "" and auto["rounds"] == 2 and auto["engine"] in ("onnxruntime", "openvino")
    assert r["error"] == "", r["error"]
    assert r["images"] == 2 and r["model_only_images_per_s"] > 0 and r["e2e_images_per_s"] > 0
    # the median over rounds of each round's ratio (not the ratio of the medians), from the rounds' own rates
    model_rates, e2e_rates = rates["ort-fp32"]
    assert len(model_rates) == len(e2e_rates) == 2
    assert r["e2e_vs_model"] == pytest.approx(float(np.median([e / m for e, m in zip(e2e_rates, model_rates)])))
    assert r["model_only_images_per_s"] == pytest.approx(float(np.median(model_rates)))
    assert r["dice"] is not None and r["provider"] == "CPUExecutionProvider"


@pytest.mark.realdata
def test_e2e_repeat_runs_the_slices_that_many_times_as_distinct_files(chaos_dir, tmp_path, monkeypatch):
    import liverseg.infer.runner as runner_mod
    from liverseg.benchmarks.artifacts import Artifacts, random_checkpoint
    from liverseg.benchmarks.e2e import run_e2e
    from liverseg.benchmarks.report import _e2e_targets

    done = []
    real = runner_mod.run_inference

    def counted(opts, log=None):
        res = real(opts, log)
        done.append((opts.limit, res.summary["n_ok"] if res.summary else None))
        return res

    monkeypatch.setattr(runner_mod, "run_inference", counted)
    art = Artifacts(random_checkpoint("unet", 4), tmp_path / "m")
    (row,) = run_e2e(
        art, ["ort-fp32"], threads=2, slices=2, rounds=1, repeat=3, data_dir=chaos_dir.parent, workdir=tmp_path / "e2e"
    )
    assert row["error"] == "", row["error"]
    assert done == [(2, 2), (None, 6)]  # the warm-up, then the six files of two slices listed three times
    assert row["images"] == 6 and row["repeat"] == 3 and row["dice"] is not None
    assert sorted(p.name for p in (tmp_path / "e2e").iterdir()) == []  # the repeated folder is removed too
    assert "over 6 slices (the 2 real slices 3 times)" in _e2e_targets(row)[0]["detail"]


def test_cli_writes_results_and_exit_code(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from liverseg.benchmarks.cli import main, parse_case

    assert parse_case("16:256,512:1,4") == [Case(16, 256, 1), Case(16, 256, 4), Case(16, 512, 1), Case(16, 512, 4)]
    monkeypatch.setitem(bk.BACKENDS, "broken", bk.BackendDef("broken", Broken, "checkpoint"))
    args = [
        "--case",
        "4:32:1",
        "--backends",
        "eager",
        "--rounds",
        "1",
        "--peak-n",
        "128",
        "--no-memory",
        "--no-e2e",
        "--scaling",
        "",
        "--synthetic",
        "--out",
        str(tmp_path / "r"),
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "latest.md").is_file() and list((tmp_path / "r").glob("bench-*.csv"))
    res = CliRunner().invoke(main, [*args[:2], "--backends", "eager,broken", *args[4:]])
    assert res.exit_code == 1, res.output  # a row recorded an error
    res = CliRunner().invoke(main, ["--backends", "nonesuch"])
    assert res.exit_code == 2 and "unknown backend" in res.output
    res = CliRunner().invoke(main, ["--case", "4:32"])
    assert res.exit_code == 2


def test_gpu_script_records_errors_without_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this checks the no-GPU path")
    from liverseg.benchmarks.gpu import GPU_BACKENDS, fp16_peak_for, main

    assert fp16_peak_for("NVIDIA H100 80GB HBM3")[0] == pytest.approx(989.4)
    assert fp16_peak_for("NVIDIA H100 PCIe")[0] == pytest.approx(756.0)
    assert fp16_peak_for("NVIDIA H200")[0] == pytest.approx(989.4)
    assert fp16_peak_for("NVIDIA A100-SXM4-80GB")[0] == pytest.approx(312.0)
    assert fp16_peak_for("Some Card")[0] is None
    from click.testing import CliRunner

    args = ["--out", str(tmp_path), "--width", "4", "--size", "32", "--batches", "1,2", "--seconds", "0.01"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    (md,) = tmp_path.glob("gpu-*/latest.md")
    (csv_path,) = tmp_path.glob("gpu-*/bench-gpu-*.csv")
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(GPU_BACKENDS)
    assert all("no CUDA device" in r["error"] for r in rows)
    assert "torch-cuda-fp16" in md.read_text()


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts)


def test_cli_writes_only_under_out(tmp_path, monkeypatch):
    """Nothing is written into the package folder: the default --out is runs/bench/ under the current folder."""
    from click.testing import CliRunner

    import liverseg.benchmarks
    from liverseg.benchmarks.cli import main

    package = Path(liverseg.benchmarks.__file__).parent
    before = _listing(package)
    readme = (package / "README.md").read_bytes()
    monkeypatch.chdir(tmp_path)
    args = ["--case", "4:32:1", "--backends", "eager", "--rounds", "1", "--peak-n", "128", "--no-memory", "--no-e2e"]
    res = CliRunner().invoke(main, [*args, "--scaling", "", "--synthetic"])
    assert res.exit_code == 0, res.output
    written = _listing(tmp_path)
    assert written[0] == "runs" and all(p.startswith("runs") for p in written), written
    assert (tmp_path / "runs" / "bench" / "latest.md").is_file()
    assert {p.suffix for p in (tmp_path / "runs" / "bench").glob("bench-*")} == {".csv", ".md", ".png", ".json"}
    assert _listing(package) == before and (package / "README.md").read_bytes() == readme


def test_checkpoint_with_two_widths_is_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from liverseg.benchmarks.artifacts import random_checkpoint
    from liverseg.benchmarks.cli import main

    ckpt = random_checkpoint("unet", 4).save(tmp_path / "best.pt")
    res = CliRunner().invoke(main, ["--checkpoint", str(ckpt), "--widths", "4,8", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "fixes the width" in res.stderr
    assert not (tmp_path / "r").exists()  # reported before any measurement or output


def test_profile_summary(tmp_path):
    from liverseg.benchmarks.bench import profile_summary

    ev = [
        {"cat": "Node", "name": "c1_kernel_time", "dur": 300, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "c2_kernel_time", "dur": 600, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "t_kernel_time", "dur": 100, "args": {"op_name": "ConvTranspose"}},
        {"cat": "Session", "name": "model_run", "dur": 5000},
    ]
    (tmp_path / "p.json").write_text(json.dumps(ev))
    assert profile_summary(tmp_path / "p.json") == "Conv 90.0%, ConvTranspose 10.0%"


def test_budget_skips_are_recorded(tmp_path):
    opts = _tiny_opts(tmp_path, ["eager"], cases=[Case(4, 32, 1), Case(4, 32, 2)], budget_s=0.0)
    res = Bench(opts, log=lambda s: None).run()
    assert len(res["rows"]) == 2 and all("budget" in r["error"] and r["images_per_s"] is None for r in res["rows"])
    assert any("budget" in n for n in res["notes"])
    write_results(res, tmp_path / "out", tag="b")  # skipped rows still make well-formed files


def test_gpu_script_rows_with_simulated_card(tmp_path, monkeypatch):
    """The GPU script's measuring loop, run on CPU backends behind a simulated CUDA device.

    (No GPU in CI: this checks the rows it fills -- rate, TFLOP/s, fraction of the card's
    peak from the table, memory, parity against the fp32 row -- not CUDA itself.)
    """
    from types import SimpleNamespace

    import liverseg.benchmarks.gpu as gpu
    import liverseg.benchmarks.peak as peak

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda *a: SimpleNamespace(major=9, minor=0, total_memory=80 << 30)
    )
    for fn in ("empty_cache", "reset_peak_memory_stats", "synchronize"):
        monkeypatch.setattr(torch.cuda, fn, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (40 << 30, 80 << 30))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 123 << 20)
    monkeypatch.setattr(peak, "cuda_matmul_peak", lambda *a, **k: {"n": 8192, "dtype": "float16", "tflops": 700.0})
    monkeypatch.setitem(bk.BACKENDS, "torch-cuda-fp32", bk.BackendDef("torch-cuda-fp32", bk.TorchEager, "checkpoint"))
    monkeypatch.setitem(
        bk.BACKENDS,
        "torch-cuda-fp16",
        bk.BackendDef("torch-cuda-fp16", bk.TorchEager, "checkpoint", options={"channels_last": True}),
    )
    monkeypatch.setitem(bk.BACKENDS, "ort-cuda-fp32", bk.BackendDef("ort-cuda-fp32", bk.OrtBackend, "onnx"))
    import onnxruntime

    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    args = [
        "--out",
        str(tmp_path),
        "--width",
        "4",
        "--size",
        "32",
        "--batches",
        "1,2",
        "--seconds",
        "0.01",
        "--min-iters",
        "2",
        "--backends",
        "torch-cuda-fp32,torch-cuda-fp16,ort-cuda-fp32",
    ]
    from click.testing import CliRunner

    res = CliRunner().invoke(gpu.main, args)
    assert res.exit_code == 0, res.output
    (csv_path,) = tmp_path.glob("gpu-nvidia-h100-80gb-hbm3/bench-gpu-*.csv")
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [(r["backend"], r["batch"]) for r in rows] == [
        (b, n) for n in ("1", "2") for b in ("torch-cuda-fp32", "torch-cuda-fp16", "ort-cuda-fp32")
    ]
    for r in rows:
        assert r["error"] == "", r["error"]
        ips, tflops = float(r["images_per_s"]), float(r["achieved_tflops"])
        assert ips > 0 and int(r["iters"]) >= 2
        assert tflops == pytest.approx(float(r["gflop_per_image"]) * ips / 1e3, rel=1e-4)
        assert float(r["frac_of_fp16_peak"]) == pytest.approx(tflops / 989.4, rel=1e-4)
        assert float(r["fp16_peak_tflops"]) == pytest.approx(989.4) and "H100 SXM5" in r["fp16_peak_source"]
        assert float(r["frac_of_measured_matmul"]) == pytest.approx(tflops / 700.0, rel=1e-4)
        if r["backend"].startswith("torch"):
            assert float(r["max_memory_allocated_mb"]) == pytest.approx(123.0)
        if r["backend"] != "torch-cuda-fp32":
            assert float(r["parity_max_abs_prob"]) < 1e-4 and int(r["parity_px"]) == int(r["batch"]) * 32 * 32


@pytest.mark.cpu_class
def test_eager_bf16_is_a_default_row_only_where_the_cpu_has_native_bf16():
    from liverseg.benchmarks.backends import BF16_FLAGS, default_backends
    from liverseg.core.engine import cpuinfo_flags

    # the hardware's flags, not a simulated CPU's: emulated bf16 would take the whole budget
    assert ("eager-bf16" in default_backends(cuda=False)) == any(f in cpuinfo_flags() for f in BF16_FLAGS)
    assert "eager-bf16" not in default_backends(cuda=False, flags=["avx2", "fma"])
    assert "eager-bf16" in default_backends(cuda=False, flags=["avx512f", "avx512_bf16"])
    assert "eager-bf16" in default_backends(cuda=False, flags=["amx_tile", "amx_bf16"])
    assert "ort-fp32" in default_backends(cuda=False, flags=["avx2"])


# ------------------------------------------------ CPU-engine targets and gates


def _engine_result(flags: list[str], weights: str = "checkpoint best.pt") -> dict[str, Any]:
    e2e = [
        {"backend": "auto", "width": 16, "weights": weights, "images": 78, "e2e_images_per_s": 27.0,
         "model_only_images_per_s": 28.0, "dice": 0.952, "engine_choice": "openvino int8: fastest",
         "engine": "openvino", "precision": "int8"},
        {"backend": "ort-fp32", "width": 16, "weights": weights, "images": 78, "e2e_images_per_s": 20.0,
         "model_only_images_per_s": 22.5, "dice": 0.955},
        {"backend": "ov-int8", "width": 16, "weights": weights, "images": 78, "e2e_images_per_s": 27.5,
         "model_only_images_per_s": 29.0, "dice": 0.952},
    ]  # fmt: skip
    rows = [{"section": "model", "backend": "ov-bf16", "width": 16, "size": 512, "batch": 1, "images_per_s": 30.0}]
    from liverseg.benchmarks.e2e import _dice_deltas

    _dice_deltas(e2e)
    return {"stamp": {"isa_flags": flags}, "rows": rows, "e2e": e2e}


def test_engine_targets_depend_on_the_cpu_class():
    from liverseg.benchmarks.report import _best_openvino, _engine_targets

    avx2 = {t["target"].split(": ", 1)[1]: t for t in _engine_targets(_engine_result(["avx2"]))}
    vs_ort = avx2["liverseg-infer defaults end to end / ONNX Runtime fp32 model-only >= 0.9 (avx2 CPU)"]
    assert vs_ort["value"] == pytest.approx(27.0 / 22.5) and vs_ort["met"] is True
    assert "openvino int8" in vs_ort["detail"]
    vs_ov = avx2["liverseg-infer defaults end to end / best OpenVINO model-only >= 0.9"]
    # auto ran OpenVINO int8: its own interleaved model-only rate stands for int8 (not the ov-int8 row's 29.0),
    # and the end-to-end section's rates are used rather than the matrix's (ov-bf16 30.0)
    assert vs_ov["value"] == pytest.approx(27.0 / 28.0) and "auto's own OpenVINO int8" in vs_ov["detail"]
    assert vs_ov["met"] is None  # set for AMX CPUs and width 64 only
    res = _engine_result(["avx2"])
    res["e2e"].append({"backend": "ov-fp32", "width": 16, "images": 78, "model_only_images_per_s": 31.0})
    assert _best_openvino(res, 16) == ("ov-fp32 (end-to-end section)", 31.0)  # a faster precision counts
    res["e2e"] = [e for e in res["e2e"] if not e["backend"].startswith("ov-")]
    res["e2e"][0]["engine"] = "onnxruntime"
    assert _best_openvino(res, 16) == ("ov-bf16 (model matrix)", 30.0)  # no OpenVINO in the e2e section
    dice = avx2["liverseg-infer defaults' masks within 0.005 Dice of fp32 on real slices"]
    assert dice["value"] == pytest.approx(-0.003) and dice["met"] is True

    amx = _engine_targets(_engine_result(["avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_bf16"]))
    assert amx[0]["target"].endswith(">= 4 (amx CPU)") and amx[0]["met"] is False
    assert amx[1]["met"] is True  # 0.9x the best OpenVINO rate, judged on AMX
    vnni = _engine_targets(_engine_result(["avx2", "avx512f", "avx512_vnni"]))
    assert vnni[0]["target"].endswith(">= 2 (avx512_vnni CPU)") and vnni[0]["met"] is False
    random_w = _engine_targets(_engine_result(["avx2"], weights="random (seeded)"))
    assert random_w[-1]["met"] is None  # masks of random weights are not judged

    res = _engine_result(["avx2"])
    res["e2e"] = [r for r in res["e2e"] if r["backend"] != "auto"]
    assert _engine_targets(res) == []  # no defaults row: nothing to judge


def test_dice_deltas_do_not_depend_on_the_row_order():
    from liverseg.benchmarks.e2e import _dice_deltas

    rows: list[dict[str, Any]] = [
        {"backend": "auto", "dice": 0.90},
        {"backend": "ort-fp32", "dice": 0.92},
        {"backend": "x", "dice": None},
    ]
    _dice_deltas(rows)
    assert rows[0]["dice_delta_vs_fp32"] == pytest.approx(-0.02)
    assert "dice_delta_vs_fp32" not in rows[1] and "dice_delta_vs_fp32" not in rows[2]


def test_gated_benchmark_files_let_auto_choose_a_reduced_precision(tmp_path):
    from liverseg.benchmarks.artifacts import Artifacts, random_checkpoint
    from liverseg.benchmarks.data import synthetic_slices
    from liverseg.core.choose import gate
    from liverseg.core.contract import read_onnx_contract
    from liverseg.export.verify import GATE_MIN_SLICES, RealSlices

    calib = synthetic_slices(2, 64, seed=1).images
    art = Artifacts(random_checkpoint("unet", 4), tmp_path, calib)
    s = synthetic_slices(GATE_MIN_SLICES, 64, seed=2)
    rows = art.gate(RealSlices(s.images, list(s.masks), s.source))
    assert {(r["engine"], r["precision"]) for r in rows} >= {("onnxruntime", "int8"), ("onnxruntime", "fp32")}
    for kind in ("onnx", "int8"):
        contract = read_onnx_contract(art.path(kind))
        assert contract["variants"] == {"int8": {"file": "model.int8.onnx"}}
        assert contract["gates"]["onnxruntime/int8"]["n_labelled"] == GATE_MIN_SLICES
    ort_int8 = next(r for r in rows if (r["engine"], r["precision"]) == ("onnxruntime", "int8"))
    g = gate(read_onnx_contract(art.path("onnx")), "onnxruntime", "int8")  # what auto reads
    assert g is not None and g["passed"] is ort_int8["passed"] and g["dice_change"] is not None


def test_flops_of_a_checkpoint_that_resizes_inside_its_graph_count_its_grid(tmp_path):
    import dataclasses

    from liverseg.benchmarks.artifacts import random_checkpoint

    ckpt = random_checkpoint("unet", 4)
    ckpt.preprocessing = dataclasses.replace(ckpt.preprocessing, size=(32, 32))  # 48x48 inputs run at 32x32
    path = ckpt.save(tmp_path / "resized.pt")
    opts = _tiny_opts(tmp_path, ["ort-fp32"], cases=[Case(4, 48, 1)], checkpoint=path, rounds=1)
    (row,) = Bench(opts, log=lambda s: None).run()["rows"]
    assert row["error"] in ("", None), row["error"]
    assert row["gflop_per_image"] == pytest.approx(model_gflop_per_image("unet", ckpt.model_args, 32))
    assert row["gflop_per_image"] < model_gflop_per_image("unet", ckpt.model_args, 48)


@pytest.mark.realdata
@pytest.mark.cpu_class
def test_the_auto_row_runs_on_gated_files(chaos_dir, tmp_path):
    """With --gate-slices the end-to-end auto row is liverseg-infer's real choice among judged engines: fp32, or
    a reduced precision whose gate passed on this CPU class (bf16 only where OpenVINO ran it as bf16)."""
    from liverseg.core.engine import cpu_class

    opts = _tiny_opts(
        tmp_path,
        ["ort-fp32"],
        cases=[Case(4, 64, 1)],
        rounds=1,
        real_data=True,
        data_dir=chaos_dir.parent,
        e2e=True,
        e2e_slices=2,
        e2e_rounds=1,
        e2e_backends=("auto", "ort-fp32"),
        gate_slices=16,
    )
    res = Bench(opts, log=lambda s: None).run()
    assert {(g["engine"], g["precision"]) for g in res["gates"]} >= {("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    assert all(g["n_labelled"] == 16 for g in res["gates"] if "n_labelled" in g)
    auto = next(e for e in res["e2e"] if e["backend"] == "auto")
    assert auto["error"] == "", auto["error"]
    klass = cpu_class()
    assert all(g["cpu_class"] == klass for g in res["gates"] if "cpu_class" in g)
    gated = {(g["engine"], g["precision"]): g for g in res["gates"] if g["passed"]}
    chosen = (auto["engine"], auto["precision"])
    assert chosen in {("onnxruntime", "fp32"), ("openvino", "fp32"), *gated}, (chosen, auto["engine_choice"])
    if auto["precision"] == "bf16":  # a BF16 or AMX CPU: OpenVINO computed in bf16 and measured it
        assert gated[chosen]["ran_as"] == "bf16"
    assert f"on this {klass} CPU" in auto["engine_choice"] and "no accuracy gate measured" not in auto["engine_choice"]
    assert "## Engine gates" in markdown(res)


def test_gate_table_has_no_speed_columns():
    """The gates are accuracy only: engine speeds are the benchmark's own rows, not the export's."""
    from liverseg.benchmarks.report import _gates_section

    gates = [{"engine": "openvino", "precision": "int8", "passed": True, "dice_change": 0.0007, "slices": "chaos",
              "weights": "ckpt", "images_per_second_512": 33.47}]  # fmt: skip
    md = "\n".join(_gates_section({"gates": gates}))
    assert "| openvino | int8 |" in md and "+0.0007" in md and "img/s" not in md and "33.47" not in md


@pytest.mark.cpu_class
def test_volume_benchmark_times_the_engine_liverseg_infer_takes_for_a_volume(tmp_path, monkeypatch):
    """The model-only loop of the CT-volume benchmark opens the model as liverseg-infer does (auto: this CPU
    class's order), and its description names that choice."""
    from liverseg.benchmarks.volume import describe_model, model_only, write_synthetic_series
    from liverseg.core.choose import choose, describe
    from liverseg.core.engine import cpu_class
    from liverseg.predict.model import ModelSession
    from liverseg.reference import model_path

    shipped = model_path()
    assert shipped is not None
    engines: list[str] = []
    real_run = ModelSession.run

    def run(self, batch, probability=False):
        engines.append(f"{self.engine_name} {self.precision}")
        return real_run(self, batch, probability)

    monkeypatch.setattr(ModelSession, "run", run)
    write_synthetic_series(tmp_path / "series", 3, 96, (0.7, 0.7, 2.0))
    rate, n = model_only(shipped, tmp_path / "series", 1, None, False)
    chosen = choose(shipped, device="cpu")
    assert n == 3 and rate > 0 and engines == [f"{chosen.engine} {chosen.precision}"] * 4
    line, width, spacing = describe_model(shipped, 16)
    assert spacing == 1.5 and width == 16 and line == describe(chosen) and f"on this {cpu_class()} CPU" in line
