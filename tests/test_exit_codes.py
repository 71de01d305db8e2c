"""Every command follows one exit-code table and never answers a user error with a traceback.

The table (liverseg/core/errors.py, docs/inference-and-volumes.md): 0 all done, 1 the batch ran and some
inputs failed, 2 usage error or bad input file, config, checkpoint or model, 3 disk
full, 130 interrupted. Each command is driven with a bad checkpoint (or model file),
a bad config value (or option value) and a bad input, where it takes one; each must
exit 2 with one ``error:`` line (click's own usage errors say ``Error:``) and no
traceback. ``--debug`` brings the traceback back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from liverseg.core.errors import EXIT_USAGE

Case = tuple[str, Callable[[Path], list[str]]]


def _png(path: Path, value: int = 100, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)
    return path


def _garbage(path: Path, text: str = "not a model at all") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _study_csvs(tmp: Path, missing: bool = False) -> Path:
    """data/test_x.csv + test_y.csv in the study's format; ``missing`` names an image that is not there."""
    img = _png(tmp / "data" / "Images" / "000.png")
    mask = _png(tmp / "data" / "Labels" / "000_mask.png", 255)
    x = tmp / "data" / "test_x.csv"
    x.write_text("X\n" + (str(tmp / "nope.png") if missing else str(img)) + "\n")
    (tmp / "data" / "test_y.csv").write_text(f"Y\n{mask}\n")
    return x


def _config(tmp: Path, **over: object) -> Path:
    x = _study_csvs(tmp)
    y = tmp / "data" / "test_y.csv"
    cfg = {
        "model": "unet",
        "in_dim": 1,
        "out_dim": 1,
        "out_activation": "sigmoid",
        "tdata_x_path": str(x),
        "tdata_y_path": str(y),
        "vdata_x_path": str(x),
        "vdata_y_path": str(y),
        "lr": 1e-5,
        "optim": "adam",
        "loss": "bce",
        "train_batch_size": 1,
        "valid_batch_size": 1,
        "epochs": 1,
        "val_metrics": ["mPA", "mIoU"],
        "save_model": False,
        "seed": 42,
        "num_workers": 0,
        "width": 2,
        "output_dir": str(tmp / "runs"),
        **over,
    }
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _commands() -> dict[str, click.Command]:
    from liverseg.apps.demo import main as demo
    from liverseg.apps.eda import main as eda
    from liverseg.apps.figures import main as figures
    from liverseg.benchmarks.cli import main as bench
    from liverseg.export.cli import main as export
    from liverseg.infer.cli import main as infer
    from liverseg.infer.report import main as report
    from liverseg.trainer.cli import eval_main, import_study_main, predict_main, train_main
    from liverseg.trainer.split import main as split

    cmds: dict[str, click.Command] = {
        "train": train_main,
        "eval": eval_main,
        "split": split,
        "export": export,
        "infer": infer,
        "eda": eda,
        "report": report,
        "bench": bench,
        "demo": demo,
        "figures": figures,
        "predict": predict_main,
        "import-study": import_study_main,
    }
    return cmds


CASES: dict[str, list[Case]] = {
    "train": [
        ("the study's test config", lambda t: [str(_study_config(t, "test"))]),
        ("bad checkpoint", lambda t: [str(_config(t, resume=str(_garbage(t / "last.pt"))))]),
        ("bad config value", lambda t: [str(_config(t, epochs="seven"))]),
        ("bad input", lambda t: [str(_config(t, tdata_x_path=str(t / "missing_x.csv")))]),
    ],
    "eval": [
        ("study config: unknown key", lambda t: [str(_study_config(t, "test", learning_rate=1))]),
        (
            "study config: bad model_path",
            lambda t: [str(_study_config(t, "test", model_path=str(_garbage(t / "m.pth"))))],
        ),
        ("bad checkpoint", lambda t: [str(_garbage(t / "best.pt")), "--x", str(_study_csvs(t))]),
        ("bad config value", lambda t: [str(_garbage(t / "best.pt")), "--x", str(_study_csvs(t)), "--batch-size", "0"]),
        ("bad input", lambda t: [str(_tiny_checkpoint(t)), "--x", str(_study_csvs(t, missing=True))]),
    ],
    "split": [
        ("bad config value", lambda t: [str(_study_csvs(t)), "-o", str(t / "s"), "--group-by", "no_such_column"]),
        ("bad input", lambda t: [str(_garbage(t / "list.csv", "")), "-o", str(t / "s")]),
    ],
    "export": [
        ("bad checkpoint", lambda t: [str(_garbage(t / "best.pt")), "--out", str(t / "e")]),
        ("bad config value", lambda t: [str(_tiny_checkpoint(t)), "--out", str(t / "e"), "--export-shape", "1x2"]),
        (
            "bad input",
            lambda t: [
                str(_tiny_checkpoint(t)),
                "--out",
                str(t / "e"),
                "--format",
                "onnx",
                "--int8",
                "--calibration",
                str(_study_csvs(t, missing=True)),
            ],
        ),
    ],
    "infer": [
        ("bad model", lambda t: [str(_study_csvs(t)), "--model", str(_garbage(t / "m.onnx")), "--out", str(t / "o")]),
        (
            "bad config value",
            lambda t: [
                str(_study_csvs(t)),
                "--model",
                str(_garbage(t / "m.onnx")),
                "--contract",
                str(_garbage(t / "c.json", "{}")),
                "--out",
                str(t / "o"),
            ],
        ),
        (
            "bad input",
            lambda t: [
                str(_garbage(t / "list.csv", "")),
                "--model",
                str(_garbage(t / "m.onnx")),
                "--out",
                str(t / "o"),
            ],
        ),
    ],
    "eda": [
        ("bad config value", lambda t: [str(_study_csvs(t)), "--out", str(t / "e"), "--bins", "1"]),
        ("bad input", lambda t: [str(_garbage(t / "list.csv", "X\n")), "--out", str(t / "e")]),
    ],
    "report": [
        ("bad config value", lambda t: [str(t), "--cases", "-1"]),
        ("bad input", lambda t: [str(t / "no_such_run")]),
    ],
    "figures": [
        (
            "bad config value",
            lambda t: ["curves", str(_garbage(t / "epochs.csv", "epoch,mPA\n1,0.5\n")), "--no-such-option"],
        ),
        ("bad input", lambda t: ["curves", str(_garbage(t / "epochs.csv", "nothing,useful\n"))]),
    ],
    "predict": [
        ("bad checkpoint", lambda t: [str(_png(t / "a.png")), "--model", str(_garbage(t / "m.pth")), "-o", "o.png"]),
        ("bad config value", lambda t: [str(_study_config(t, "pred", threshold=2))]),
        ("bad input", lambda t: [str(_garbage(t / "a.png")), "--model", str(_tiny_checkpoint(t)), "-o", "o.png"]),
    ],
    "import-study": [
        ("bad checkpoint", lambda t: [str(_garbage(t / "trained_model.pth")), "--model", "unet", "-o", "o.pt"]),
        ("bad config value", lambda t: [str(_garbage(t / "trained_model.pth")), "--model", "resnet", "-o", "o.pt"]),
        ("bad input", lambda t: [str(_foreign_state_dict(t)), "--model", "baseline", "-o", "o.pt"]),
    ],
    "bench": [
        ("bad checkpoint", lambda t: ["--checkpoint", str(_garbage(t / "best.pt")), "--out", str(t / "b")]),
        ("bad config value", lambda t: ["--case", "garbage", "--out", str(t / "b")]),
    ],
    "demo": [
        ("bad config value", lambda t: ["--out", str(t / "d"), "--device", "tpu:0"]),
        ("bad input", lambda t: ["--out", str(_garbage(t / "d")), "--stages", "no_such_stage"]),
    ],
}


def _study_config(tmp: Path, kind: str, **over: object) -> Path:
    """The study's test or pred config (its keys verbatim) with ``over`` replacing some."""
    x = _study_csvs(tmp)
    common = {"model": "unet", "in_dim": 1, "out_dim": 1, "out_activation": "sigmoid", "model_path": "m.pth"}
    if kind == "test":
        cfg = {**common, "data_x_path": str(x), "data_y_path": str(x.with_name("test_y.csv")), "batch_size": 1}
        cfg.update({"test_metrics": ["mPA", "mIoU"], "save_metrics": True})
    else:
        cfg = {**common, "threshold": 0.5, "image_in_path": str(tmp / "data" / "Images" / "000.png")}
        cfg["image_out_path"] = "pred_output/000_pred.png"
    path = tmp / "configs" / f"{kind}_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**cfg, **over}))
    return path


def _foreign_state_dict(tmp: Path) -> Path:
    import torch

    path = tmp / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    return path


def _tiny_checkpoint(tmp: Path) -> Path:
    import torch

    from liverseg.checkpoint import Checkpoint
    from liverseg.core.preprocess import Preprocessing
    from liverseg.models import create_model

    torch.manual_seed(0)
    net = create_model("unet", width=2)
    ck = Checkpoint("unet", {"in_channels": 1, "out_channels": 1, "width": 2}, Preprocessing(), net.state_dict())
    return ck.save(tmp / "runs" / "tiny" / "checkpoints" / "best.pt")


PARAMS = [
    pytest.param(cmd, what, make, id=f"{cmd}-{what.replace(' ', '-')}")
    for cmd, cases in CASES.items()
    for what, make in cases
]


@pytest.mark.parametrize("cmd,what,make", PARAMS)
def test_user_error_exits_2_with_one_line(cmd, what, make, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = make(tmp_path)
    res = CliRunner().invoke(_commands()[cmd], args)
    out = res.output + (res.stderr if res.stderr_bytes is not None else "")
    assert "Traceback" not in out
    assert res.exit_code == EXIT_USAGE, f"liverseg-{cmd} {what}: exit {res.exit_code}\n{out}\n{res.exception!r}"
    assert isinstance(res.exception, SystemExit), f"an exception escaped: {res.exception!r}"
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith(("error:", "Error:"))]
    assert len(errors) == 1, f"expected one error line on stderr, got:\n{res.stderr}"


def test_every_command_is_covered():
    assert set(CASES) == set(_commands())


def test_a_console_script_prints_one_line_and_debug_shows_the_traceback(tmp_path):
    bad = _garbage(tmp_path / "best.pt")
    cmd = [sys.executable, "-m", "liverseg.trainer.cli", "--help"]
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=120).returncode == 0
    code = (
        "import sys; from liverseg.trainer.cli import eval_main; "
        f"sys.argv = ['liverseg-eval', {str(bad)!r}, '--x', {str(_study_csvs(tmp_path))!r}] + sys.argv[1:]; "
        "eval_main()"
    )
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2, plain.stderr
    assert "Traceback" not in plain.stderr
    assert plain.stderr.strip().startswith("error:") and str(bad) in plain.stderr
    debug = subprocess.run([sys.executable, "-c", code, "--debug"], capture_output=True, text=True, timeout=120)
    assert "Traceback" in debug.stderr and "CheckpointError" in debug.stderr


def test_interrupt_exits_130():
    from liverseg.core.cli import command
    from liverseg.core.errors import EXIT_INTERRUPTED

    @command()
    def interrupted() -> None:
        raise KeyboardInterrupt

    res = CliRunner().invoke(interrupted, [])
    assert res.exit_code == EXIT_INTERRUPTED


def test_full_disk_exits_3():
    import errno

    from liverseg.core.cli import command
    from liverseg.core.errors import EXIT_DISK_FULL

    @command()
    def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "out/mask.png")

    res = CliRunner().invoke(full, [])
    assert res.exit_code == EXIT_DISK_FULL
    assert "out/mask.png" in res.stderr
