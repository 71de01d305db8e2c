"""Split inference runs: ``liverseg-infer --num-parts N --part-id K`` into one folder, then ``liverseg-merge``."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_infer import _checkpoint, _export, _png, _slice, _study_layout, held  # tests/ is on sys.path under pytest

from liverseg.infer.inputs import Item
from liverseg.infer.merge import main as merge_main
from liverseg.infer.resume import read_journal
from liverseg.infer.runner import HOLD_ENV
from liverseg.infer.shard import part_dir, select_part

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return _export(_checkpoint(), tmp_path_factory.mktemp("model") / "model.onnx")


def _infer(args: list[str], hold_after: int = 0) -> subprocess.Popen:
    """``liverseg-infer ARGS``; ``hold_after``: it waits once that many inputs are journaled (see ``held``)."""
    env = {**os.environ, HOLD_ENV: str(hold_after)}
    return subprocess.Popen(
        [sys.executable, "-m", "liverseg.infer.cli", *args, "--device", "cpu", "--no-progress", "--threads", "1"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,  # a held run goes on at the end of its stdin (_done closes it)
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _done(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


def _table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k != "latency_ms"} for row in csv.DictReader(f)]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_parts_are_blocks_of_sorted_keys_whatever_the_listing_order():
    keys = [f"k{i:02d}" for i in range(10)]
    random.Random(0).shuffle(keys)
    items = [Item(i, f"/x/{k}.png", None, k, "png") for i, k in enumerate(keys)]
    parts = [select_part(items, 3, k) for k in range(3)]
    assert [len(p) for p in parts] == [3, 3, 4]
    assert [[it.key for it in sorted(p, key=lambda it: it.key)] for p in parts] == [
        ["k00", "k01", "k02"],
        ["k03", "k04", "k05"],
        ["k06", "k07", "k08", "k09"],
    ]
    assert all([it.index for it in p] == sorted(it.index for it in p) for p in parts), "input order within a part"
    shuffled = list(reversed(items))  # another listing order: the same shares
    assert [{it.key for it in select_part(shuffled, 3, k)} for k in range(3)] == [{it.key for it in p} for p in parts]


def test_three_parts_at_once_then_merge_equal_one_run(tmp_path, tiny_model):
    root = _study_layout(tmp_path / "study", n=11, sizes=[(48, 48)] * 6 + [(40, 56)] * 5)
    src = root / "data/test_x.csv"
    base = [str(src), "--model", str(tiny_model), "--batch-size", "2", "--data-root", str(root)]
    one, split = tmp_path / "one", tmp_path / "split"
    code, log = _done(_infer([*base, "--out", str(one)]))
    assert code == 0, log
    procs = [_infer([*base, "--out", str(split), "--num-parts", "3", "--part-id", str(k)], 1) for k in range(3)]
    logs = [held(p) for p in procs]  # every part holds its folder, an input done, until _done releases it
    rival = _infer([*base, "--out", str(split), "--num-parts", "3", "--part-id", "1"])  # part 1 again
    whole = _infer([*base, "--out", str(split)])  # a whole run into the split folder
    for p in (rival, whole):
        code, log = _done(p)
        assert code == 2 and "in use" in log, log
    results = [(c, log + rest) for log, (c, rest) in zip(logs, (_done(p) for p in procs))]
    assert [c for c, _ in results] == [0, 0, 0], results
    assert not (split / "per_image.csv").exists() and not (split / "report.html").exists()
    for k in range(3):
        assert (part_dir(split, k, 3) / "summary.json").exists()

    r = CliRunner().invoke(merge_main, [str(split)])
    assert r.exit_code == 0, r.output
    assert _files(split / "masks") == _files(one / "masks"), "byte-identical masks"
    assert _table(split / "per_image.csv") == _table(one / "per_image.csv")
    import json

    a, b = (json.loads((d / "summary.json").read_text()) for d in (split, one))
    assert a["metrics"] == b["metrics"] and a["n_ok"] == b["n_ok"] == 11
    timings = {"images_per_second", "model_images_per_second", "pipeline_efficiency", "wall_seconds"}
    timings |= {"model_seconds", "latency_ms", "end_to_end_latency_ms", "started", "finished", "command"}
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} <= timings | {"parts"}
    assert a["inputs"] == b["inputs"] and a["model"] == b["model"]
    assert [p["n_inputs"] for p in a["parts"]] == [3, 4, 4]
    assert (split / "report.html").stat().st_size > 1000

    other = _export(_checkpoint(seed=1), tmp_path / "other.onnx")  # another model into the same split
    code, log = _done(
        _infer([str(src), "--model", str(other), "--out", str(split), "--num-parts", "3", "--part-id", "2"])
    )
    assert code == 2 and "another split run" in log, log
    code, log = _done(_infer([*base, "--out", str(split), "--num-parts", "2", "--part-id", "0"]))
    assert code == 2 and "num_parts" in log, log


def test_merge_refuses_missing_or_running_parts_and_a_part_resumes(tmp_path, tiny_model):
    src = tmp_path / "in"
    rng = np.random.default_rng(5)
    for i in range(24):
        _png(src / f"{i:03d}.png", _slice(rng, 40, 40)[0])
    out = tmp_path / "out"
    base = [str(src), "--model", str(tiny_model), "--out", str(out), "--num-parts", "2", "--no-report"]
    code, log = _done(_infer([*base, "--part-id", "0"]))
    assert code == 0, log
    r = CliRunner().invoke(merge_main, [str(out)])
    assert r.exit_code == 2 and "part 1 of 2 has not run" in r.output, r.output

    slow = _infer([*base, "--part-id", "1"], hold_after=3)
    journal = part_dir(out, 1, 2) / "journal.jsonl"
    held(slow)  # 3 inputs journaled, the part waiting
    r = CliRunner().invoke(merge_main, [str(out)])
    assert r.exit_code == 2 and "still running" in r.output, r.output
    slow.send_signal(signal.SIGKILL)
    slow.wait(timeout=30)
    n_before = len(list(read_journal(journal)))
    assert 3 <= n_before < 12
    r = CliRunner().invoke(merge_main, [str(out)])
    assert r.exit_code == 2 and "has not finished" in r.output, r.output

    code, log = _done(_infer([*base, "--part-id", "1", "--resume"]))
    assert code == 0 and f"{n_before} of 12 inputs already complete" in log, log
    r = CliRunner().invoke(merge_main, [str(out), "--no-report"])
    assert r.exit_code == 0, r.output
    rows = _table(out / "per_image.csv")
    assert [int(r["index"]) for r in rows] == list(range(24)) and {r["status"] for r in rows} == {"ok"}
    assert len(list((out / "masks").iterdir())) == 24

    table = part_dir(out, 0, 2) / "per_image.csv"
    text = table.read_text()
    first = text.splitlines()[1]
    table.write_text(text.replace(first, "12" + first[1:]))  # part 0 claims part 1's input 12, loses its 0
    r = CliRunner().invoke(merge_main, [str(out), "--no-report"])
    assert r.exit_code == 2 and "parts overlap: input(s) 12 (parts 0 and 1)" in r.output, r.output
    table.write_text(text.replace(first, "99" + first[1:]))
    r = CliRunner().invoke(merge_main, [str(out), "--no-report"])
    assert r.exit_code == 2 and "no part has input(s) 0" in r.output and "unknown input(s) 99" in r.output, r.output


def test_device_names_a_gpu_or_is_refused(tmp_path, tiny_model):
    from liverseg.infer.cli import main as infer_main

    _png(tmp_path / "in" / "a.png", _slice(np.random.default_rng(0), 32, 32)[0])
    r = CliRunner().invoke(infer_main, [str(tmp_path / "in"), "--model", str(tiny_model), "--device", "gpu"])
    assert r.exit_code == 2 and "cuda:N" in r.output
    r = CliRunner().invoke(
        infer_main,
        [str(tmp_path / "in"), "--model", str(tiny_model), "--device", "cuda:0", "--out", str(tmp_path / "o")],
    )
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert r.exit_code == 2 and "error:" in r.output, r.output
    else:
        assert r.exit_code in (0, 2), r.output  # 2 when the provider is listed but its libraries do not load


def test_volume_parts_merge_to_one_runs_per_volume_table(tmp_path):
    nib = pytest.importorskip("nibabel")
    pytest.importorskip("scipy")
    from test_volumes import AFFINE, _model, _nifti, _phantom

    from liverseg.infer.merge import merge_parts
    from liverseg.infer.runner import Options, run_inference

    model = _model(tmp_path, None)
    (tmp_path / "in").mkdir()
    for n in range(3):
        _nifti(tmp_path / "in" / f"v{n}.nii.gz", _phantom(seed=n)[0], AFFINE)

    def run(out: Path, **kw) -> int:
        opts = Options(source=tmp_path / "in", model=model, out=out, progress=False, report=False, device="cpu", **kw)
        return run_inference(opts, log=lambda s: None).exit_code

    assert run(tmp_path / "one") == 0
    assert [run(tmp_path / "split", num_parts=2, part_id=k) for k in (1, 0)] == [0, 0]
    summary = merge_parts(tmp_path / "split", report=False, log=lambda s: None)
    assert summary["n_ok"] == 3 and [p["n_inputs"] for p in summary["parts"]] == [1, 2]

    def table(path: Path) -> list[dict[str, str]]:
        with open(path, newline="") as f:
            return [{k: v for k, v in r.items() if "ms" not in k and "second" not in k} for r in csv.DictReader(f)]

    for name in ("per_volume.csv", "per_image.csv"):
        assert table(tmp_path / "split" / name) == table(tmp_path / "one" / name), name
    stats = [json.loads((tmp_path / d / "statistics.json").read_text()) for d in ("split", "one")]
    assert stats[0] == stats[1] and len(stats[0]["volumes"]) == 3
    for n in range(3):
        a, b = (nib.load(str(tmp_path / d / "masks" / f"v{n}.nii.gz")) for d in ("split", "one"))
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)) and np.allclose(a.affine, b.affine)
    assert summary["volume_metrics"] == json.loads((tmp_path / "one" / "summary.json").read_text())["volume_metrics"]


def test_a_split_folder_inside_the_inputs_is_never_listed_as_inputs(tmp_path, tiny_model):
    from liverseg.infer.inputs import list_inputs
    from liverseg.infer.runner import Options, run_inference

    src = tmp_path / "in"
    rng = np.random.default_rng(1)
    for i in range(4):
        _png(src / f"{i}.png", _slice(rng, 32, 32)[0])
    for k in range(2):
        opts = Options(
            source=src, model=tiny_model, out=src / "split", num_parts=2, part_id=k, progress=False, report=False
        )
        assert run_inference(opts, log=lambda s: None).exit_code == 0
    assert len(list((src / "split" / "masks").iterdir())) == 4
    assert sorted(Path(it.image).name for it in list_inputs(src)) == ["0.png", "1.png", "2.png", "3.png"]
