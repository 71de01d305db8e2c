"""liverseg-infer: inputs, labels, names, bad files, device rules, reports, resume after SIGKILL.

Models are width-4 U-Nets exported with :func:`liverseg.export.onnx.export_onnx`;
images are small synthetic slices written in the test, except for the two real-data
tests (seed-format parity with liverseg-eval, a CHAOS folder with bad files mixed in).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from liverseg.core.contract import CONTRACT_KEY
from liverseg.core.errors import UsageError
from liverseg.core.files import TMP_MARK
from liverseg.core.images import read_mask
from liverseg.core.metrics import confusion, scores
from liverseg.infer.cli import main as infer_main
from liverseg.infer.inputs import PER_IMAGE_COLUMNS, output_keys
from liverseg.infer.resume import read_journal
from liverseg.infer.runner import HOLD_ENV, HOLD_MARK, Options, run_inference
from liverseg.predict.model import DeviceError, cudnn_search_for, open_session

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

SUMMARY_KEYS = {
    "n_inputs",
    "n_ok",
    "n_failed",
    "n_skipped",
    "failed",
    "metrics",
    "mPA",
    "mIoU",
    "images_per_second",
    "model_images_per_second",
    "latency_ms",
    "provider",
    "providers_requested",
    "device",
    "threads",
    "batch_size",
    "model",
    "versions",
    "command",
    "started",
    "finished",
}


# ---------------------------------------------------------------- helpers


def _checkpoint(width: int = 4, seed: int = 0):
    import torch

    from liverseg.checkpoint import Checkpoint
    from liverseg.core.preprocess import Preprocessing
    from liverseg.models import create_model

    torch.manual_seed(seed)
    args = {"in_channels": 1, "out_channels": 1, "width": width}
    net = create_model("unet", **args)
    return Checkpoint("unet", args, Preprocessing(), {k: v.clone() for k, v in net.state_dict().items()})


def _export(ckpt, path: Path) -> Path:
    from liverseg.export.onnx import export_onnx

    return export_onnx(ckpt, path, example_shape=(1, 1, 64, 64))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return _export(_checkpoint(), tmp_path_factory.mktemp("model") / "model.onnx")


def _slice(rng: np.random.Generator, h: int = 48, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.15, 0.3) * min(h, w)
    truth = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    img = np.clip(rng.normal(40, 15, (h, w)) + truth * 80, 0, 255).astype(np.uint8)
    return img, truth


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _study_layout(root: Path, n: int = 3, seed: int = 0, sizes=None) -> Path:
    """The study's layout: data/Images/NNN.png, data/Labels/NNN_mask.png, test_x.csv / test_y.csv."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        h, w = sizes[i] if sizes else (48, 48)
        img, truth = _slice(rng, h, w)
        _png(root / f"data/Images/{i:03d}.png", np.stack([img] * 3, -1))  # RGB with R=G=B, as the study stored
        _png(root / f"data/Labels/{i:03d}_mask.png", truth.astype(np.uint8) * 255)
        xs.append(f"data/Images/{i:03d}.png")
        ys.append(f"data/Labels/{i:03d}_mask.png")
    (root / "data/test_x.csv").write_text("X\n" + "\n".join(xs) + "\n")
    (root / "data/test_y.csv").write_text("Y\n" + "\n".join(ys) + "\n")
    (root / "data/data_pairs.csv").write_text("X,Y\n" + "\n".join(f"{x},{y}" for x, y in zip(xs, ys)) + "\n")
    return root


def _run(tmp: Path, source: Path, model: Path, **kw) -> tuple[int, Any, Any, list[dict]]:
    """(exit code, summary.json content, run folder, per_image.csv rows) of one run_inference call.

    On exit 2 the summary and folder are None and the rows hold the message; they are
    typed ``Any`` because the tests index them directly.
    """
    kw.setdefault("report", False)  # report.html costs seconds (matplotlib); one test keeps it
    opts = Options(source=source, model=model, out=kw.pop("out", tmp / "out"), progress=False, **kw)
    res = run_inference(opts, log=lambda s: None)
    rows = []
    if res.out_dir is not None and (res.out_dir / "per_image.csv").exists():
        import pandas as pd

        rows = pd.read_csv(res.out_dir / "per_image.csv", dtype=str, keep_default_na=False).to_dict("records")
    if res.exit_code == 2:
        rows = [{"message": res.message}]
    return res.exit_code, res.summary, res.out_dir, rows


def _bomb_png(path: Path, side: int = 40000) -> Path:
    """A valid 1x1 PNG whose header claims side x side pixels (Pillow must refuse it)."""
    data = bytearray(Path(_png(path, np.zeros((1, 1), np.uint8))).read_bytes())
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", side, side)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[12 : ihdr + 13])))
    path.write_bytes(bytes(data))
    return path


def _bad_files(folder: Path) -> dict[str, str]:
    """Bad inputs of every kind the issue names -> a word their error must contain."""
    good = folder / "_good.png"
    _png(good, np.full((32, 32), 100, np.uint8))
    raw = good.read_bytes()
    good.unlink()
    (folder / "zero_bytes.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(raw[: len(raw) // 2])
    (folder / "not_an_image.png").write_text("this is a text file, not a PNG\n")
    corrupt = bytearray(raw)
    corrupt[40:60] = b"\x00" * 20
    (folder / "corrupt.png").write_bytes(bytes(corrupt))
    _bomb_png(folder / "bomb.png")
    Image.new("LAB", (32, 32)).save(folder / "lab_3channel.tif")
    return {
        "zero_bytes.png": "empty",
        "truncated.png": "truncated",
        "not_an_image.png": "not a readable image",
        "corrupt.png": "corrupt",
        "bomb.png": "decompression bomb",
        "lab_3channel.tif": "unsupported image mode",
    }


# ---------------------------------------------------------------- imports and names


def test_infer_does_not_import_torch():
    code = (
        "import sys, liverseg.infer.cli, liverseg.infer.runner, liverseg.predict.model, liverseg.infer.inputs,"
        " liverseg.infer.outcome, liverseg.infer.resume, liverseg.infer.rows, liverseg.infer.schedule\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print(bad[:5]); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, f"liverseg.infer imported torch: {r.stdout} {r.stderr}"


def test_output_keys_are_unique_deterministic_and_plain_when_possible(tmp_path):
    paths = [
        Path("x/a/001.png"),
        Path("x/b/001.png"),
        Path("x/a/002.png"),
        Path("y/a/003.png"),
        Path("z/a/003.png"),
        Path("x/a/004.png"),
        Path("x/a/004.jpg"),
        Path("x/a/005.png"),
        Path("x/a/005.png"),
        Path("x/a/Case.png"),
        Path("x/b/case.png"),
    ]
    keys = output_keys(paths)
    assert keys == output_keys(list(paths)), "not deterministic"
    assert len({k.casefold() for k in keys}) == len(keys), keys
    assert keys[0] == "a__001" and keys[1] == "b__001"
    assert keys[2] == "002", "a stem without collision keeps its plain name"
    assert keys[3] == "y__a__003" and keys[4] == "z__a__003"
    assert keys[5] == "004__png" and keys[6] == "004__jpg"
    assert keys[7] != keys[8] and keys[7].startswith("005")
    assert keys[9].casefold() != keys[10].casefold()
    assert output_keys([Path("d/n m?.png")]) == ["n_m_"]


# ---------------------------------------------------------------- inputs and labels


def test_study_csv_finds_partner_labels_and_metrics_match_masks(tmp_path, tiny_model):
    root = _study_layout(tmp_path / "study", n=3)
    code, s, out, rows = _run(tmp_path, root / "data/test_x.csv", tiny_model, data_root=root)
    assert code == 0, rows
    assert s["n_ok"] == 3 and s["inputs"]["n_with_labels"] == 3
    assert list(rows[0]) == list(PER_IMAGE_COLUMNS)
    for i, row in enumerate(rows):
        assert row["output"] == f"masks/{i:03d}_pred.png" and row["status"] == "ok"
        pred_img = Image.open(out / row["output"])
        assert pred_img.mode == "L" and pred_img.size == (48, 48)
        arr = np.asarray(pred_img)
        assert set(np.unique(arr)) <= {0, 255}
        truth = read_mask(root / f"data/Labels/{i:03d}_mask.png")
        tp, fp, fn, tn = confusion(arr > 0, truth)
        assert (int(row["tp"]), int(row["fp"]), int(row["fn"]), int(row["tn"])) == (tp, fp, fn, tn)
        assert float(row["dice"]) == pytest.approx(scores(tp, fp, fn, tn)["dice"], abs=1e-12)
        assert float(row["liver_fraction"]) == pytest.approx((arr > 0).mean(), abs=1e-12)
    macro = np.mean([float(r["mIoU"]) for r in rows])
    assert s["mIoU"] == pytest.approx(macro, abs=1e-12) and s["metrics"]["macro"]["mIoU"] == s["mIoU"]
    pooled = np.sum([[int(r[k]) for k in ("tp", "fp", "fn", "tn")] for r in rows], axis=0)
    assert s["metrics"]["micro"]["dice"] == pytest.approx(scores(*pooled)["dice"], abs=1e-12)


def test_pairs_csv_folder_and_labels_option(tmp_path, tiny_model):
    root = _study_layout(tmp_path / "study", n=2)
    code, s, out, rows = _run(tmp_path, root / "data/data_pairs.csv", tiny_model, data_root=root, out=tmp_path / "p")
    assert code == 0 and s["metrics"]["n_images"] == 2 and rows[1]["label"].endswith("001_mask.png")
    # Images/ + Labels/ folder: labels found by the _mask suffix.
    code, s, _, rows = _run(tmp_path, root / "data", tiny_model, out=tmp_path / "f")
    assert code == 0 and s["metrics"]["n_images"] == 2 and rows[0]["label"].endswith("000_mask.png")
    # A plain folder of images: no labels, no metrics, empty metric columns.
    plain = tmp_path / "plain"
    for i in range(2):
        _png(plain / f"{i}.png", _slice(np.random.default_rng(i))[0])
    code, s, _, rows = _run(tmp_path, plain, tiny_model, out=tmp_path / "n")
    assert code == 0 and s["metrics"] is None and s["mPA"] is None
    assert rows[0]["dice"] == "" and rows[0]["tp"] == "" and rows[0]["liver_fraction"] != ""
    # --labels with a folder of masks for the plain folder.
    masks = tmp_path / "lab"
    for i in range(2):
        _png(masks / f"{i}_mask.png", _slice(np.random.default_rng(i))[1].astype(np.uint8) * 255)
    code, s, _, rows = _run(tmp_path, plain, tiny_model, labels=masks, out=tmp_path / "l")
    assert code == 0 and s["metrics"]["n_images"] == 2
    # --labels as a *_y.csv for an image CSV without a partner.
    (root / "data/test_y.csv").rename(root / "data/other_y.csv")
    code, s, _, _ = _run(tmp_path, root / "data/test_x.csv", tiny_model, data_root=root, out=tmp_path / "y0")
    assert code == 0 and s["metrics"] is None
    code, s, _, _ = _run(
        tmp_path,
        root / "data/test_x.csv",
        tiny_model,
        data_root=root,
        labels=root / "data/other_y.csv",
        out=tmp_path / "y1",
    )
    assert code == 0 and s["metrics"]["n_images"] == 2


def test_name_collisions_mixed_sizes_and_limit(tmp_path, tiny_model):
    src = tmp_path / "in"
    rng = np.random.default_rng(1)
    sizes = [(48, 48), (40, 56), (48, 48), (40, 56), (33, 47), (48, 48)]
    for i, (h, w) in enumerate(sizes):
        _png(src / ("a" if i % 2 else "b") / f"{i // 2:03d}.png", _slice(rng, h, w)[0])
    code, s, out, rows = _run(tmp_path, src, tiny_model, batch_size=2)
    assert code == 0 and s["n_ok"] == 6
    outs = [r["output"] for r in rows]
    assert len(set(outs)) == 6 and all(Path(o).name.startswith(("a__", "b__")) for o in outs)
    assert [int(r["index"]) for r in rows] == list(range(6)), "per_image.csv must follow the input order"
    for r in rows:
        im = Image.open(out / r["output"])
        assert (im.size[1], im.size[0]) == (int(r["height"]), int(r["width"])) == Image.open(r["input"]).size[::-1]
    code, s, _, rows = _run(tmp_path, src, tiny_model, limit=2, out=tmp_path / "lim")
    assert code == 0 and s["n_inputs"] == 2 and len(rows) == 2


# ---------------------------------------------------------------- bad inputs


def test_bad_files_are_listed_and_the_run_continues(tmp_path, tiny_model):
    src = tmp_path / "in"
    rng = np.random.default_rng(2)
    for i in range(3):
        _png(src / f"good{i}.png", _slice(rng)[0])
    expect = _bad_files(src)
    (src / "notes.txt").write_text("not an input: no image extension")
    code, s, out, rows = _run(tmp_path, src, tiny_model, batch_size=2)
    assert code == 1
    by_name = {Path(r["input"]).name: r for r in rows}
    for i in range(3):
        r = by_name[f"good{i}.png"]
        assert r["status"] == "ok" and (out / r["output"]).is_file()
    for name, word in expect.items():
        r = by_name[name]
        assert r["status"] == "failed" and word in r["error"] and name in r["error"], (name, r["error"])
        assert r["output"] == ""
    assert s["n_failed"] == len(expect) and s["n_ok"] == 3
    assert {Path(f["input"]).name for f in s["failed"]} == set(expect)
    assert s["inputs"]["ignored_files"] == 1
    assert not [p for p in out.rglob("*") if TMP_MARK in p.name]


def test_missing_files_in_a_csv_and_bad_labels(tmp_path, tiny_model):
    root = _study_layout(tmp_path / "study", n=3)
    (root / "data/Images/001.png").unlink()
    (root / "data/Labels/002_mask.png").write_bytes(b"")
    code, s, out, rows = _run(tmp_path, root / "data/test_x.csv", tiny_model, data_root=root)
    assert code == 1 and [r["status"] for r in rows] == ["ok", "failed", "failed"]
    assert "not found" in rows[1]["error"]
    assert rows[2]["error"].startswith("label:") and "empty" in rows[2]["error"]
    assert (out / rows[2]["output"]).is_file(), "a bad label still leaves the mask"
    assert s["metrics"]["n_images"] == 1


def test_fail_fast_stops_and_lists_the_rest_as_skipped(tmp_path, tiny_model):
    root = _study_layout(tmp_path / "study", n=6)
    (root / "data/Images/001.png").write_bytes(b"")
    code, s, _, rows = _run(tmp_path, root / "data/test_x.csv", tiny_model, data_root=root, fail_fast=True)
    assert code == 1
    assert rows[1]["status"] == "failed" and rows[-1]["status"] == "skipped" and "fail-fast" in rows[-1]["error"]
    assert s["n_skipped"] >= 1 and s["n_ok"] + s["n_failed"] + s["n_skipped"] == 6


# ---------------------------------------------------------------- model, contract, device


def test_device_rules(tiny_model):
    import onnxruntime as ort

    cpu = open_session(tiny_model, device="cpu", engine="onnxruntime")  # ONNX Runtime's rules (auto: any engine)
    assert cpu.session.get_providers() == ["CPUExecutionProvider"] and cpu.device == "cpu"
    try:
        cuda = open_session(tiny_model, device="cuda")
    except DeviceError as e:  # no usable CUDA here: refused, never a silent CPU session
        assert "--device cuda" in str(e) and ("did not load" in str(e) or "no CUDA" in str(e)), str(e)
        auto = open_session(tiny_model, device="auto")
        assert auto.device == "cpu" and any("CPU" in n for n in auto.notes), auto.notes
    else:
        assert cuda.session.get_providers()[0] == "CUDAExecutionProvider" and cuda.device.startswith("cuda")
        assert cuda.cudnn_conv_algo_search in ("EXHAUSTIVE", "HEURISTIC")
    assert "CPUExecutionProvider" in ort.get_available_providers()
    assert cudnn_search_for([(512, 512)] * 10) == "EXHAUSTIVE"
    assert cudnn_search_for([(i, i) for i in range(10)]) == "HEURISTIC"


def test_the_io_binding_path_returns_what_the_plain_run_returns(tiny_model):
    """The CUDA path (I/O binding, only the outputs asked for bound) run on a CPU session, whose binding works
    the same: masks and probabilities equal to the plain run's, the probability only when asked for."""
    import dataclasses

    cpu = open_session(tiny_model, device="cpu", engine="onnxruntime")
    bound = dataclasses.replace(cpu, device="cuda:0")  # the same session through _run_cuda
    x = np.random.default_rng(0).integers(0, 256, (2, 1, 48, 40), dtype=np.uint8)
    (m1, p1), (m2, p2) = cpu.run(x), bound.run(x)
    assert np.array_equal(m1, m2) and m1.shape == x.shape and m1.dtype == np.uint8 and p1 is None and p2 is None
    (m1, p1), (m2, p2) = cpu.run(x, probability=True), bound.run(x, probability=True)
    assert p1 is not None and p2 is not None and np.array_equal(m1, m2) and np.array_equal(p1, p2)
    own = dataclasses.replace(bound, own_threshold=True)  # --contract: the probability thresholded here
    mask, prob = own.run(x)
    assert prob is None and np.array_equal(mask, (p1 > own.threshold).astype(np.uint8))


@pytest.mark.parametrize("gpu", [False, True])
def test_input_sizes_are_read_ahead_only_where_a_gpu_could_search_for_them(tmp_path, tiny_model, monkeypatch, gpu):
    import liverseg.infer.runner as runner_mod

    read: list[str] = []
    sizes: list[Any] = []
    real_open = runner_mod.open_model
    monkeypatch.setattr(runner_mod, "gpu_present", lambda: gpu)

    def image_size(path):
        read.append(str(path))
        return (48, 48)

    def open_model(*a, **k):
        sizes.append(k["sizes"])
        return real_open(*a, **k)

    monkeypatch.setattr(runner_mod, "image_size", image_size)
    monkeypatch.setattr(runner_mod, "open_model", open_model)
    root = _study_layout(tmp_path / "study", n=2)
    # device auto: the CPU where no CUDA loads; the sizes only tune a CUDA session's algorithm search
    opts = Options(source=root / "data/test_x.csv", data_root=root, model=tiny_model, out=tmp_path / "o")
    res = run_inference(opts, log=lambda _: None)
    assert res.exit_code == 0, res.message
    assert len(read) == (2 if gpu else 0) and sizes == [[(48, 48)] * 2 if gpu else []]


def test_cuda_requested_without_cuda_is_a_usage_error(tmp_path, tiny_model):
    try:
        open_session(tiny_model, device="cuda")
    except DeviceError:
        pass
    else:
        pytest.skip("CUDA loads on this machine")
    root = _study_layout(tmp_path / "study", n=1)
    r = CliRunner().invoke(
        infer_main,
        [
            str(root / "data/test_x.csv"),
            "--model",
            str(tiny_model),
            "--device",
            "cuda",
            "--data-root",
            str(root),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 2, r.output
    assert "CUDA" in r.output and "would have run on the CPU" in r.output
    assert "\x1b[" not in r.output, "onnxruntime's coloured log lines must not leak into the output"
    assert not (tmp_path / "o" / "masks").exists()


def test_cuda_run_matches_cpu(tmp_path, tiny_model):
    """On a machine where onnxruntime's CUDA provider loads (torch may be CPU-only): CUDA == CPU."""
    try:
        open_session(tiny_model, device="cuda")
    except DeviceError as e:
        pytest.skip(f"onnxruntime CUDA provider does not load here: {e}")
    root = _study_layout(tmp_path / "study", n=4)
    src = root / "data/test_x.csv"
    code_c, s_c, out_c, _ = _run(tmp_path, src, tiny_model, data_root=root, device="cpu", out=tmp_path / "c")
    code_g, s_g, out_g, _ = _run(
        tmp_path, src, tiny_model, data_root=root, device="cuda", out=tmp_path / "g", save_probabilities=True
    )
    assert code_c == code_g == 0 and s_g["provider"] == "CUDAExecutionProvider" and s_g["device"] == "cuda:0"
    assert s_g["cudnn_conv_algo_search"] == "EXHAUSTIVE" and s_g["batch_size"] == 8
    assert s_g["metrics"]["macro"]["dice"] == pytest.approx(s_c["metrics"]["macro"]["dice"], abs=1e-4)
    for p in sorted((out_c / "masks").iterdir()):
        a, b = np.asarray(Image.open(p)), np.asarray(Image.open(out_g / "masks" / p.name))
        assert np.count_nonzero(a != b) <= 2


def test_model_without_contract_is_refused_unless_given_one(tmp_path, tiny_model):
    import onnx

    bare = tmp_path / "bare.onnx"
    m = onnx.load(str(tiny_model))
    contract = next(p.value for p in m.metadata_props if p.key == CONTRACT_KEY)
    del m.metadata_props[:]
    onnx.save(m, str(bare))
    root = _study_layout(tmp_path / "study", n=1)
    code, _, _, rows = _run(tmp_path, root / "data/test_x.csv", bare, data_root=root)
    assert code == 2 and "no liverseg contract" in rows[0]["message"]
    (tmp_path / "c.json").write_text(contract)
    code, s, _, _ = _run(
        tmp_path, root / "data/test_x.csv", bare, data_root=root, contract=tmp_path / "c.json", out=tmp_path / "o2"
    )
    assert code == 0 and s["model"]["contract"]["format"] == "liverseg-model"


def test_model_latest_picks_the_newest_export_and_says_so(tmp_path, tiny_model, monkeypatch):
    root = _study_layout(tmp_path / "study", n=1)
    monkeypatch.chdir(tmp_path)
    args = [str(root / "data/test_x.csv"), "--data-root", str(root), "--no-progress", "--no-report"]
    r = CliRunner().invoke(infer_main, [*args, "--model", "latest"])
    assert r.exit_code == 2 and "no model" in r.output and "--model latest" in r.output
    for name, age in (("old", 100), ("new", 0)):
        p = tmp_path / "runs" / name / "export" / "model.onnx"
        p.parent.mkdir(parents=True)
        p.write_bytes(tiny_model.read_bytes())
        os.utime(p, (time.time() - age, time.time() - age))
    r = CliRunner().invoke(infer_main, [*args, "--model", "latest"])
    assert r.exit_code == 0, r.output
    assert "model: runs/new/export/model.onnx (--model latest: newest export" in r.output
    run_dirs = sorted((tmp_path / "runs").glob("infer-*"))
    assert len(run_dirs) == 1 and (run_dirs[0] / "masks" / "000_pred.png").is_file()
    r = CliRunner().invoke(infer_main, [*args, "--model", "nowhere.onnx"])
    assert r.exit_code == 2 and "--model nowhere.onnx: no such file" in r.output


# ---------------------------------------------------------------- reports


@pytest.mark.cpu_class
def test_report_contents_overlays_and_probabilities(tmp_path, tiny_model):
    from liverseg.core.choose import choose

    root = _study_layout(tmp_path / "study", n=2)
    r = CliRunner().invoke(
        infer_main,
        [
            str(root / "data/test_x.csv"),
            "--model",
            str(tiny_model),
            "--data-root",
            str(root),
            "--out",
            str(tmp_path / "o"),
            "--overlays",
            "--save-probabilities",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "macro" in r.output and "img/s end-to-end" in r.output and "model-only" in r.output
    out = tmp_path / "o"
    s = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(s), SUMMARY_KEYS - set(s)
    assert s["device"] == "cpu" and s["threads"] == 1
    chosen = choose(tiny_model, device="cpu")  # the engine auto takes on this CPU class (OpenVINO fp32 on AMX)
    assert (s["engine"], s["precision"]) == (chosen.engine, chosen.precision)
    provider = "CPUExecutionProvider" if chosen.engine == "onnxruntime" else f"OpenVINO CPU {chosen.precision}"
    assert s["provider"] == provider and s["providers_requested"] == [provider]
    assert s["model"]["sha256"] and s["model"]["contract"]["threshold"] == 0.5
    assert {"onnxruntime", "numpy", "Pillow", "python", "liverseg"} <= set(s["versions"])
    assert "--overlays" in s["command"] and s["started"] <= s["finished"]
    assert s["images_per_second"] > 0 and s["model_images_per_second"] >= s["images_per_second"] * 0.5
    assert set(s["latency_ms"]) == {"p50", "p90", "p99"}
    assert set(s["metrics"]) == {"n_images", "macro", "micro"} and s["mPA"] == s["metrics"]["macro"]["mPA"]
    prob = Image.open(out / "probabilities/000_prob.png")
    assert prob.mode.startswith("I") and prob.size == (48, 48)
    p = np.asarray(prob, dtype=np.float64) / 65535.0
    mask = np.asarray(Image.open(out / "masks/000_pred.png")) > 0
    assert np.array_equal(mask[np.abs(p - 0.5) > 1e-4], (p > 0.5)[np.abs(p - 0.5) > 1e-4])
    ov = np.asarray(Image.open(out / "overlays/000_overlay.png"))
    assert ov.shape == (48, 48, 3) and ov.dtype == np.uint8
    assert (out / "report.html").is_file(), r.output


# ---------------------------------------------------------------- resume


def _cli(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen(
        [PY, "-m", "liverseg.infer.cli", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,  # a run held by HOLD_ENV waits for a line here (communicate() closes it)
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def held(proc: subprocess.Popen) -> str:
    """Read ``proc``'s stderr up to its HOLD_ENV mark: the run then waits, that many inputs in its journal.

    No clock: the run says when it got there, however fast or loaded the machine is.
    """
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(HOLD_MARK):
            return "".join(seen)
    proc.wait(timeout=30)
    raise AssertionError(f"the run ended (exit {proc.returncode}) before its hold:\n{''.join(seen)}")


def test_sigkill_then_resume_gives_identical_outputs(tmp_path, tiny_model):
    src = tmp_path / "in"
    rng = np.random.default_rng(3)
    for i in range(30):
        _png(src / f"{i:03d}.png", _slice(rng, 40, 40)[0])
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    base = [
        str(src),
        "--model",
        str(tiny_model),
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        "--no-report",
    ]
    proc = _cli(base + ["--out", str(killed)], {HOLD_ENV: "6"})
    journal = killed / "journal.jsonl"
    held(proc)  # 6 inputs journaled, the run waiting
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    n_before = len(list(read_journal(journal)))
    assert 6 <= n_before < 30, "the kill must land part-way"
    assert not (killed / "summary.json").exists()
    r = CliRunner().invoke(infer_main, base + ["--out", str(killed)])
    assert r.exit_code == 2 and "--resume" in r.output, "an existing run is never overwritten silently"
    r = CliRunner().invoke(infer_main, base + ["--out", str(killed), "--resume"])
    assert r.exit_code == 0, r.output
    assert "resumed" in r.output
    code, s, _, rows_ref = _run(tmp_path, src, tiny_model, out=ref, batch_size=2, device="cpu")
    assert code == 0
    got = sorted(p.name for p in (killed / "masks").iterdir())
    assert got == sorted(p.name for p in (ref / "masks").iterdir()) and len(got) == 30
    for name in got:
        assert (killed / "masks" / name).read_bytes() == (ref / "masks" / name).read_bytes(), name
    assert not [p for p in killed.rglob("*") if TMP_MARK in p.name], "partial files left behind"
    import pandas as pd

    a = pd.read_csv(killed / "per_image.csv").drop(columns=["latency_ms"])
    b = pd.read_csv(ref / "per_image.csv").drop(columns=["latency_ms"])
    pd.testing.assert_frame_equal(a, b)
    s_k = json.loads((killed / "summary.json").read_text())
    assert s_k["n_ok"] == 30 and s_k["n_resumed"] >= n_before - 2
    assert s_k["metrics"] == s["metrics"] is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_exits_130_cleanly_and_resume_finishes(tmp_path, tiny_model, sig, monkeypatch):
    src = tmp_path / "in"
    rng = np.random.default_rng(4)
    for i in range(16):
        _png(src / f"{i:03d}.png", _slice(rng, 32, 32)[0])
    out = tmp_path / "o"
    proc = _cli(
        [str(src), "--model", str(tiny_model), "--device", "cpu", "--no-report", "--out", str(out)], {HOLD_ENV: "3"}
    )
    held(proc)  # 3 inputs journaled, the run waiting: the signal lands part-way on any machine
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and not (out / "summary.json").exists()
    assert not [p for p in out.rglob("*") if TMP_MARK in p.name]
    # --resume without --out finds the newest run folder under the runs folder.
    monkeypatch.setenv("LIVERSEG_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()
    out.rename(tmp_path / "runs" / "infer-x")
    r = CliRunner().invoke(
        infer_main, [str(src), "--model", str(tiny_model), "--device", "cpu", "--no-report", "--resume"]
    )
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "runs/infer-x/summary.json").read_text())
    assert s["n_ok"] == 16 and s["n_resumed"] >= 3 and s["n_run"] == 16 - s["n_resumed"]


def test_run_report_owns_counts_failures_metrics_and_exit_code():
    from liverseg.infer.outcome import RunReport

    report = RunReport(n_inputs=3)
    assert report.return_code == 0 and report.metrics_summary() is None
    report.add(
        {
            "index": 0,
            "input": "a.png",
            "status": "ok",
            "latency_ms": 2.0,
            "_e2e_ms": 5.0,
            "tp": 3,
            "fp": 1,
            "fn": 0,
            "tn": 4,
        }
    )
    assert report.return_code == 0
    report.add({"index": 1, "input": "b.png", "status": "failed", "error": "b.png: corrupt"})
    report.add({"index": 2, "input": "c.png", "status": "skipped", "error": "not run"})
    assert report.return_code == 1
    report.timed(wall_seconds=2.0, model_seconds=0.5, n_run=1)
    s = report.summary({"device": "cpu"})
    assert (s["n_ok"], s["n_failed"], s["n_skipped"], s["n_run"]) == (1, 1, 1, 1)
    assert s["failed"] == [{"input": "b.png", "error": "b.png: corrupt"}]
    assert s["images_per_second"] == 0.5 and s["model_images_per_second"] == 2.0 and s["pipeline_efficiency"] == 0.25
    assert s["metrics"]["macro"]["dice"] == pytest.approx(scores(3, 1, 0, 4)["dice"]) and s["device"] == "cpu"
    assert s["latency_ms"]["p50"] == 2.0 and s["end_to_end_latency_ms"]["p99"] == 5.0
    report.interrupted = True
    assert report.return_code == 130


def test_scheduler_batches_by_size_isolates_a_failing_input_and_stops_when_told(tmp_path):
    from liverseg.infer.inputs import Item
    from liverseg.infer.rows import failed_row
    from liverseg.infer.schedule import Plan, Scheduler

    sizes = [(8, 8), (8, 12), (8, 8), (8, 8), (8, 12), (8, 8), (8, 8)]
    items = []
    for i, (h, w) in enumerate(sizes):
        img = np.full((h, w), 7 if i == 3 else 1, np.uint8)  # input 3 breaks the model
        items.append(Item(i, str(_png(tmp_path / f"{i}.png", img)), None, str(i)))
    (tmp_path / "bad.png").write_bytes(b"")
    items.append(Item(len(items), str(tmp_path / "bad.png"), None, "bad"))
    batches: list[tuple[int, ...]] = []

    def model(batch: np.ndarray) -> tuple[np.ndarray, None]:
        batches.append(batch.shape)
        if (batch == 7).any():
            raise RuntimeError("boom\nsecond line")
        return (batch > 0).astype(np.uint8), None

    def write(ld, mask, prob, latency_ms):
        return {"index": ld.item.index, "status": "ok", "shape": mask.shape}

    rows: list[dict] = []

    def keep(row: dict) -> bool:
        rows.append(row)
        return True

    def keep_until_a_failure(row: dict) -> bool:
        rows.append(row)
        return row["status"] == "ok"

    sched = Scheduler(
        Plan(batch_size=2, decode_workers=2, write_workers=2),
        SimpleNamespace(model=model),
        write,
        failed_row,
        keep,
    )
    assert sched.run(items) is False
    assert sorted(r["index"] for r in rows) == list(range(len(items))), "every input reaches the sink once"
    by_index = {r["index"]: r for r in rows}
    assert by_index[3]["status"] == "failed" and by_index[3]["error"].endswith("model failed (boom)")
    assert by_index[len(sizes)]["status"] == "failed" and "bad.png" in by_index[len(sizes)]["error"]
    assert all(by_index[i]["status"] == "ok" and by_index[i]["shape"] == sizes[i] for i in range(len(sizes)) if i != 3)
    assert {b[2:] for b in batches} == {(8, 8), (8, 12)} and max(b[0] for b in batches) == 2
    # (8, 8) inputs 0, 2, 3, 5, 6: [0, 2], [3, 5] fails -> [3], [5] one at a time, then [6] left at the end.
    assert batches == [(2, 1, 8, 8), (2, 1, 8, 12), (2, 1, 8, 8), (1, 1, 8, 8), (1, 1, 8, 8), (1, 1, 8, 8)], batches
    assert sched.n_model == len(sizes) - 1 and sched.wall_seconds >= sched.model_seconds > 0
    # The sink answering False (--fail-fast) stops new inputs; what was started still reaches it.
    rows.clear()
    sched = Scheduler(
        Plan(batch_size=1, decode_workers=1, write_workers=1),
        SimpleNamespace(model=model),
        write,
        failed_row,
        keep_until_a_failure,
    )
    assert sched.run(items) is False
    got = sorted((r["index"], r["status"]) for r in rows)
    assert got == [(0, "ok"), (1, "ok"), (2, "ok"), (3, "failed")], got


def test_journal_survives_a_line_cut_short(tmp_path):
    from liverseg.infer.resume import Journal

    path = tmp_path / "journal.jsonl"
    path.write_text('{"index": 0, "status": "ok"}\n{"index": 1, "sta')  # killed mid-write
    assert [r["index"] for r in read_journal(path)] == [0]
    j = Journal(path)
    j.append({"index": 2, "status": "ok"})
    j.close()
    assert [r["index"] for r in read_journal(path)] == [0, 2]


def test_resume_rejects_a_different_input_list(tmp_path, tiny_model):
    root = _study_layout(tmp_path / "study", n=3)
    code, _, out, _ = _run(tmp_path, root / "data/test_x.csv", tiny_model, data_root=root)
    assert code == 0
    code, _, _, rows = _run(tmp_path, root / "data/test_x.csv", tiny_model, data_root=root, resume=True, limit=2)
    assert code == 2 and "different input list" in rows[0]["message"]
    # A mask damaged after the run is not "complete": --resume rewrites it.
    (out / "masks/001_pred.png").write_bytes(b"\x89PNG")
    code, s, _, _ = _run(tmp_path, root / "data/test_x.csv", tiny_model, data_root=root, resume=True)
    assert code == 0 and s["n_resumed"] == 2 and s["n_run"] == 1
    assert Image.open(out / "masks/001_pred.png").size == (48, 48)


def test_usage_errors_exit_2(tmp_path, tiny_model):
    r = CliRunner().invoke(infer_main, [str(tmp_path / "missing.csv"), "--model", str(tiny_model)])
    assert r.exit_code == 2
    root = _study_layout(tmp_path / "study", n=1)
    r = CliRunner().invoke(infer_main, [str(root / "data/test_x.csv"), "--model", str(tiny_model), "--batch-size", "0"])
    assert r.exit_code == 2
    (tmp_path / "y_only.csv").write_text("Y\na.png\n")
    r = CliRunner().invoke(infer_main, [str(tmp_path / "y_only.csv"), "--model", str(tiny_model)])
    assert r.exit_code == 2 and "only a Y column" in r.output


# Each refused option value or pair: (command-line arguments, the same as Options fields, the message).
REFUSED = [
    (["--batch-size", "0"], {"batch_size": 0}, "--batch-size must be >= 1, got 0"),
    (["--threads", "0"], {"threads": 0}, "--threads must be >= 1, got 0"),
    (["--limit", "0"], {"limit": 0}, "--limit must be >= 1, got 0"),
    (["--min-blob", "-1"], {"min_blob": -1}, "--min-blob must be >= 0, got -1"),
    (["--max-pixels", "0"], {"max_pixels": 0}, "--max-pixels must be >= 1, got 0"),
    (["--num-parts", "0"], {"num_parts": 0}, "--num-parts must be >= 1, got 0"),
    (["--num-parts", "2"], {"num_parts": 2}, "--num-parts 2 needs --part-id K (0..1)"),
    (["--part-id", "1"], {"part_id": 1}, "--part-id 1 without --num-parts"),
    (["--num-parts", "2", "--part-id", "2"], {"num_parts": 2, "part_id": 2}, "--part-id must be in 0..1"),
    (["--num-parts", "2", "--part-id", "0"], {"num_parts": 2, "part_id": 0}, "--num-parts needs --out"),
    (["--window", "10", "5"], {"window": (10.0, 5.0)}, "--window: HIGH must be above LOW, got 10 5"),
    (["--spacing", "0"], {"spacing": 0.0}, "--spacing must be in (0, 10] mm, got 0.0"),
    (["--spacing", "10.5"], {"spacing": 10.5}, "--spacing must be in (0, 10] mm, got 10.5"),
    (["--device", "gpu"], {"device": "gpu"}, "--device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    (["--fail-on-flags", "no_liver,mirrored"], {"fail_on_flags": ("no_liver", "mirrored")}, "unknown flag mirrored"),
    (["--store-overlay"], {"store_overlay": True}, "--store-overlay sends the overlay series with the SEG: it needs"),
]


@pytest.mark.parametrize(("args", "fields", "message"), REFUSED, ids=[" ".join(a) for a, _, _ in REFUSED])
def test_an_option_is_refused_once_alike_from_the_command_line_and_from_python(tmp_path, args, fields, message):
    """Options is the one check: the command line shows its UsageError as one 'error:' line (exit 2), and a
    Python caller gets the same message from Options(...), before any input is listed or model opened."""
    png = _png(tmp_path / "in" / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(UsageError) as refused:
        Options(source=png, **fields)
    assert message in str(refused.value)
    r = CliRunner().invoke(infer_main, [str(png), *args], prog_name="liverseg-infer")
    assert r.exit_code == 2, r.output
    assert r.output.count(message) == 1 and f"error: {refused.value}" in r.output.splitlines(), r.output
    assert "Traceback" not in r.output


def test_options_needing_scipy_are_refused_when_built_without_it(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else find_spec(name, *a))
    png = _png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    both = ((["--largest-component"], {"largest_component": True}), (["--min-blob", "5"], {"min_blob": 5}))
    for args, fields in both:
        with pytest.raises(UsageError, match="need scipy, which the 'volumes' extra installs"):
            Options(source=png, **fields)
        r = CliRunner().invoke(infer_main, [str(png), *args])
        assert r.exit_code == 2 and r.output.count("need scipy") == 1, r.output


@pytest.mark.parametrize(
    ("option", "field"),
    [("--intensity", "intensity"), ("--engine", "engine"), ("--precision", "precision")]
    + [("--output-format", "output_format")],
)
def test_a_closed_set_is_listed_by_click_and_checked_by_options(tmp_path, option, field):
    """click.Choice parses the closed sets (and lists them in --help); Options checks the same constants for
    Python callers."""
    png = _png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    bad: dict[str, Any] = {field: "nope"}
    with pytest.raises(UsageError, match=f"^{option} must be one of .*, got 'nope'$"):
        Options(source=png, **bad)
    r = CliRunner().invoke(infer_main, [str(png), option, "nope"])
    assert r.exit_code == 2 and "'nope' is not one of" in r.output, r.output


def test_options_once_checked_stay_as_checked(tmp_path):
    """The runner takes Options as built: frozen, so a checked value cannot be changed behind the check, and
    a changed copy (dataclasses.replace) is checked again."""
    import dataclasses

    opts = Options(source=tmp_path, window=(-100, 200), batch_size=2)
    assert opts.window == (-100.0, 200.0) and all(type(v) is float for v in opts.window)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.batch_size = 0  # type: ignore[misc]
    with pytest.raises(UsageError, match="--batch-size must be >= 1, got 0"):
        dataclasses.replace(opts, batch_size=0)


# ---------------------------------------------------------------- real data


def _tree_state(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every entry under ``root``: (is a folder, size, mtime in ns); a write anywhere changes it."""
    return {
        str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def _set_dir_modes(root: Path, mode: int) -> None:
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        d.chmod(mode)


@pytest.mark.realdata
@pytest.mark.slow
def test_seed_format_matches_liverseg_eval(seed_format, tmp_path, monkeypatch):
    """The issue's first done-criterion: run inside seed-format, labels found, metrics == liverseg-eval."""
    import torch

    from liverseg.core.images import discover, read_pair
    from liverseg.trainer.evaluate import evaluate

    ckpt = _checkpoint(seed=1)
    # 30 optimiser steps on 128x128 views of the two slices (a liver-centred crop and the whole
    # slice at 1/4 scale), so that the checkpoint predicts liver: a trained checkpoint, cheaply.
    # BatchNorm statistics are then recalibrated on the full slices for eval mode.
    samples = discover(seed_format / "data/test_x.csv", root=seed_format)
    pairs = [read_pair(s) for s in samples]
    views = []
    for img, truth in pairs:
        cy, cx = (int(v.mean()) for v in np.nonzero(truth))
        y0, x0 = int(np.clip(cy - 64, 0, 384)), int(np.clip(cx - 64, 0, 384))
        views += [
            (img[y0 : y0 + 128, x0 : x0 + 128], truth[y0 : y0 + 128, x0 : x0 + 128]),
            (img[::4, ::4], truth[::4, ::4]),
        ]
    x = torch.from_numpy(np.stack([v[0] for v in views]))[:, None]
    y = torch.from_numpy(np.stack([v[1] for v in views]))[:, None].float()
    from liverseg.core.preprocess import preprocess

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine one thread is several times faster here
    try:
        torch.manual_seed(1)
        net = ckpt.build_model(eval_mode=False)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        z = preprocess(x, ckpt.preprocessing)
        for _ in range(30):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(net(z), y).backward()
            opt.step()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 1.0
        with torch.no_grad():
            net(preprocess(torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None], ckpt.preprocessing))
    finally:
        torch.set_num_threads(threads)
    ckpt.state_dict = {k: v.detach().clone() for k, v in net.state_dict().items()}
    model = _export(ckpt, tmp_path / "model.onnx")
    ref = evaluate(ckpt, samples, device="cpu", batch_size=1, progress=False)

    # Run inside a copy of seed-format whose mode bits this test sets: read-only, as the data folder is
    # shipped. The outcome must not depend on whether ../shared happens to be writable on this machine
    # (a writable folder receives runs/ by design); the shared folder itself is compared before and after.
    shared_before = _tree_state(seed_format)
    study = tmp_path / "seed-format"
    shutil.copytree(seed_format, study, copy_function=shutil.copyfile)
    copy_before = _tree_state(study)
    monkeypatch.chdir(study)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _set_dir_modes(study, 0o555)
    try:
        r = CliRunner().invoke(infer_main, ["data/test_x.csv", "--model", str(model), "--no-progress", "--no-report"])
    finally:
        _set_dir_modes(study, 0o755)
    assert r.exit_code == 0, r.output
    assert _tree_state(study) == copy_before, "nothing may be written into the data folder"
    assert _tree_state(seed_format) == shared_before, "the shared data folder changed"
    run = next((tmp_path / "home" / "liverseg-runs").glob("infer-*"))
    assert sorted(p.name for p in (run / "masks").iterdir()) == ["000_pred.png", "001_pred.png"]
    s = json.loads((run / "summary.json").read_text())
    assert s["inputs"]["n_with_labels"] == 2, "test_y.csv must be found on its own"
    assert 0 < s["metrics"]["macro"]["dice"] < 1, "the trained checkpoint should predict some liver"
    for k in ("dice", "iou", "precision", "recall", "mPA", "mIoU"):
        assert abs(s["metrics"]["macro"][k] - ref[k]) <= 1e-4, (k, s["metrics"]["macro"][k], ref[k])
        assert abs(s["metrics"]["micro"][k] - ref[f"micro_{k}"]) <= 1e-4, k


@pytest.mark.realdata
def test_chaos_folder_with_bad_files(chaos_dir, tmp_path, tiny_model):
    """The issue's second done-criterion: every good CHAOS slice processed, every bad file listed."""
    src = tmp_path / "chaos"
    src.mkdir()
    images = sorted((chaos_dir / "images").glob("*.png"))[::4]  # 20 of the 78 slices keep the test short
    for p in images:  # links, never copies of the data
        (src / p.name).symlink_to(p)
    expect = _bad_files(src)
    code, s, out, rows = _run(tmp_path, src, tiny_model, device="cpu")
    assert code == 1
    assert s["n_ok"] == len(images) == 20 and s["n_failed"] == len(expect)
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted(Path(r["input"]).name for r in ok) == [p.name for p in images]
    assert all((out / r["output"]).is_file() for r in ok)
    assert Image.open(out / ok[0]["output"]).size == (512, 512)
    failed = {Path(f["input"]).name: f["error"] for f in s["failed"]}
    for name, word in expect.items():
        assert word in failed[name], (name, failed[name])


def test_a_model_with_only_a_mask_output_runs_unless_probabilities_are_needed(tmp_path, tiny_model):
    """A mask-only model file is enough for masks; saving probabilities is refused before any work."""
    import onnx

    from liverseg.infer.cli import main

    model = onnx.load(str(tiny_model))
    keep = [o for o in model.graph.output if o.name != "probability"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    mask_only = tmp_path / "mask_only.onnx"
    onnx.save(model, str(mask_only))
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        _png(src / f"s{i}.png", _slice(rng)[0])
    ok = CliRunner().invoke(main, [str(src), "--model", str(mask_only), "--out", str(tmp_path / "a"), "--no-report"])
    assert ok.exit_code == 0, ok.output
    assert len(list((tmp_path / "a" / "masks").glob("*.png"))) == 2
    refused = CliRunner().invoke(
        main, [str(src), "--model", str(mask_only), "--out", str(tmp_path / "b"), "--save-probabilities"]
    )
    assert refused.exit_code == 2 and "'probability'" in refused.output, refused.output
    # a model trained at a recorded pixel size resamples inputs and back, which needs the probabilities
    from liverseg.export.onnx import update_contract

    update_contract(mask_only, ct={"window_hu": [0.0, 255.0], "pixel_spacing_mm": 1.5})
    spaced = CliRunner().invoke(main, [str(src), "--model", str(mask_only), "--out", str(tmp_path / "c")])
    assert spaced.exit_code == 2 and "1.5 mm pixels and back" in spaced.output, spaced.output
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()  # refused before any folder is made
