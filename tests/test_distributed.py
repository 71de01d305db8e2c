"""Data-parallel training on the CPU (gloo): torchrun with 2 processes, resume with 1, a 2-node rendezvous."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_trainer import STUDY_CONFIG, write_dataset  # tests/ is on sys.path under pytest

from liverseg.checkpoint import load_checkpoint
from liverseg.core.images import discover
from liverseg.trainer.cli import train_main
from liverseg.trainer.distributed import World, shard
from liverseg.trainer.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("mPA", "mIoU", "dice", "iou", "precision", "recall")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return int(s.getsockname()[1])


def _config(root: Path, **over) -> Path:
    d = {**STUDY_CONFIG, "lr": 3e-3, "train_batch_size": 4, "valid_batch_size": 3, "epochs": 1, "width": 4}
    d.update(output_dir=str(root / "runs"), device="cpu", data_root=str(root), **over)
    for k in ("tdata_x_path", "tdata_y_path", "vdata_x_path", "vdata_y_path"):
        d[k] = str(root / str(STUDY_CONFIG[k]))
    path = root / "config.json"
    path.write_text(json.dumps(d))
    return path


def _torchrun(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    return out


def _epochs(run: Path) -> list[dict[str, str]]:
    with open(run / "epochs.csv", newline="") as f:
        return list(csv.DictReader(f))


def _the_run(root: Path) -> Path:
    runs = list((root / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def _matches_eval(run: Path, root: Path, checkpoint: str = "best.pt") -> None:
    """The last epoch's validation metrics are liverseg-eval's on the checkpoint it wrote."""
    row = _epochs(run)[-1]
    val = discover(root / "data" / "val_x.csv", root=root, need_labels=True)
    direct = evaluate(run / "checkpoints" / checkpoint, val, device="cpu", batch_size=1, progress=False)
    for k in METRICS:
        assert float(row[k]) == pytest.approx(direct[k], rel=1e-5, abs=1e-6), k


def test_validation_blocks_cover_every_slice_once():
    for n in (0, 1, 5, 7):
        for size in (1, 2, 3):
            blocks = [list(shard(n, World(size, r, r))) for r in range(size)]
            assert [i for b in blocks for i in b] == list(range(n))


def test_two_processes_train_then_one_resumes(tmp_path: Path):
    root = write_dataset(tmp_path, n_train=8, n_val=5)
    config = _config(root, epochs=2)
    out = _finish(
        _torchrun(["--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "liverseg.trainer", str(config)])
    )
    run = _the_run(root)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert out.count("run folder:") == 1, "rank 0 alone reports"
    log = (run / "train.log").read_text()
    assert "2 processes (DistributedDataParallel, gloo), global batch 4 = 2 per process" in log
    assert [r["epoch"] for r in _epochs(run)] == ["1", "2"]
    _matches_eval(run, root, "last.pt")

    # resume with one process, in the same run folder
    r = CliRunner().invoke(
        train_main, [str(config), "--set", f"resume={run / 'checkpoints' / 'last.pt'}", "--set", "epochs=3", "-q"]
    )
    assert r.exit_code == 0, r.output
    assert _the_run(root) == run and [r["epoch"] for r in _epochs(run)] == ["1", "2", "3"]
    assert "1 process;" in (run / "train.log").read_text()
    assert load_checkpoint(run / "checkpoints" / "last.pt").epoch == 3
    _matches_eval(run, root, "last.pt")


def test_two_nodes_rendezvous_on_localhost(tmp_path: Path):
    root = write_dataset(tmp_path, n_train=6, n_val=3)
    config = _config(root)
    endpoint = f"localhost:{free_port()}"
    common = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint]
    common += ["--rdzv-id", "liverseg-test"]
    nodes = [
        _torchrun([*common, "--rdzv-conf", f"is_host={int(k == 0)}", "-m", "liverseg.trainer", str(config)])
        for k in range(2)
    ]
    outs = [_finish(p) for p in nodes]
    assert sum(o.count("run folder:") for o in outs) == 1
    run = _the_run(root)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert (
        "2 processes (DistributedDataParallel, gloo), global batch 4 = 2 per process" in (run / "train.log").read_text()
    )
    _matches_eval(run, root)


def test_global_batch_must_split_and_launcher_refuses_nesting(tmp_path: Path, monkeypatch):
    root = write_dataset(tmp_path, n_train=4, n_val=2)
    config = _config(root, train_batch_size=3)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    r = CliRunner().invoke(train_main, [str(config), "-q"])
    assert r.exit_code == 2 and "does not split over 2 processes" in r.output, r.output
    r = CliRunner().invoke(train_main, [str(config), "--nproc-per-node", "2"])
    assert r.exit_code == 2 and "inside a torchrun process" in r.output, r.output
    r = CliRunner().invoke(train_main, [str(_config(root, sync_batchnorm=True)), "-q"])
    assert r.exit_code == 2 and "SyncBatchNorm needs CUDA" in r.output, r.output


def test_train_cli_launches_torchrun(tmp_path: Path):
    """``liverseg-train --nproc-per-node 2`` runs the same through torch's launcher."""
    root = write_dataset(tmp_path, n_train=4, n_val=2)
    config = _config(root)
    proc = subprocess.run(
        [sys.executable, "-m", "liverseg.trainer", "--nproc-per-node", "2", str(config), "-q"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = _the_run(root)
    assert "2 processes (DistributedDataParallel, gloo)" in (run / "train.log").read_text()
    assert proc.stdout.count("run folder:") == 1
