"""Self-describing checkpoints: round trip, safe loading, and one-line errors naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from liverseg.checkpoint import FORMAT, Checkpoint, CheckpointError, file_sha256, latest_run_checkpoint, load_checkpoint
from liverseg.core.preprocess import Preprocessing
from liverseg.models import create_model


def make_ckpt(name: str = "unet", width: int = 4, **kw) -> Checkpoint:
    torch.manual_seed(0)
    net = create_model(name, width=width)
    # non-trivial BatchNorm statistics, so the round trip checks buffers too
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.9, 1.1)
    args = {"in_channels": 1, "out_channels": 1, "width": width}
    return Checkpoint(
        model_name=name,
        model_args=args,
        preprocessing=Preprocessing(pad_multiple=16 if name == "unet" else 32),
        state_dict=net.state_dict(),
        **kw,
    )


def one_line(e: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    return msg


@pytest.mark.parametrize("name", ["unet", "baseline"])
def test_round_trip_gives_the_same_outputs(tmp_path, name):
    ck = make_ckpt(
        name,
        threshold=0.4,
        config={"model": name, "lr": 1e-3, "val_metrics": ["mPA"]},
        epoch=3,
        history=[{"epoch": 1, "dice": 0.5}, {"epoch": 2, "dice": 0.6}, {"epoch": 3, "dice": 0.7}],
        best={"metric": "dice", "value": 0.7, "epoch": 3},
        data_summary={"train": {"n_images": 10}},
    )
    path = ck.save(tmp_path / "sub" / "best.pt")
    assert path.exists() and not list(path.parent.glob(".*.tmp"))  # atomic write leaves no temporary file
    back = load_checkpoint(path)
    assert back.path == path
    assert back.model_name == name and back.model_args == ck.model_args
    assert back.preprocessing == ck.preprocessing
    assert back.threshold == 0.4 and back.epoch == 3 and back.best == ck.best
    assert back.history == ck.history and back.config == ck.config and back.data_summary == ck.data_summary
    assert back.versions["torch"] == str(torch.__version__)
    x = torch.randint(0, 256, (2, 1, 40, 52), dtype=torch.uint8)
    with torch.inference_mode():
        p1, m1 = ck.build_pipeline()(x)
        p2, m2 = back.build_pipeline()(x)
    assert torch.equal(p1, p2) and torch.equal(m1, m2)
    assert torch.equal(m2, (p2 > 0.4).to(torch.uint8))  # the stored threshold is used
    assert not back.build_model().training


def test_optimizer_state_round_trips(tmp_path):
    net = create_model("unet", width=4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.rand(2, 1, 32, 32)).mean().backward()
    opt.step()
    ck = Checkpoint("unet", {"width": 4}, Preprocessing(), net.state_dict(), optimizer=opt.state_dict())
    back = load_checkpoint(ck.save(tmp_path / "last.pt"))
    opt2 = torch.optim.Adam(create_model("unet", width=4).parameters(), lr=1e-3)
    assert back.optimizer is not None
    opt2.load_state_dict(back.optimizer)
    assert opt2.state_dict()["param_groups"][0]["lr"] == 1e-3


def test_file_holds_only_plain_containers_and_loads_weights_only(tmp_path):
    path = make_ckpt().save(tmp_path / "c.pt")
    d = torch.load(path, weights_only=True)
    assert d["format"] == FORMAT and d["format_version"] == 1
    assert d["model"] == {"name": "unet", "args": {"in_channels": 1, "out_channels": 1, "width": 4}}


class Boom:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["LIVERSEG_TEST_MARKER"]),))


def test_pickled_object_is_refused_not_executed(tmp_path, monkeypatch):
    marker = tmp_path / "executed"
    monkeypatch.setenv("LIVERSEG_TEST_MARKER", str(marker))
    d = make_ckpt().to_dict()
    d["config"] = {"payload": Boom()}
    path = tmp_path / "evil.pt"
    torch.save(d, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    one_line(e, path)
    assert not marker.exists(), "weights_only=False was used: the pickled object ran"
    # the same file with an ordinary unpickler would run the payload: the test is meaningful
    with open(path, "rb"):
        pass
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_corrupt_file(tmp_path):
    good = make_ckpt().save(tmp_path / "good.pt")
    data = good.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(bad)
    assert "not a loadable checkpoint" in one_line(e, bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint at all\n" * 10)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(junk)
    one_line(e, junk)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(empty)
    one_line(e, empty)


def test_foreign_checkpoint_plain_state_dict(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(create_model("unet", width=4).state_dict(), path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = one_line(e, path)
    assert "not a liverseg checkpoint" in msg
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model_state_dict": {}, "epoch": 3}, wrapped)
    with pytest.raises(CheckpointError, match="not a liverseg checkpoint") as e:
        load_checkpoint(wrapped)
    one_line(e, wrapped)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(CheckpointError, match="not a liverseg checkpoint") as e:
        load_checkpoint(tensor)
    one_line(e, tensor)


def test_unexpected_and_missing_keys(tmp_path):
    d = make_ckpt().to_dict()
    d["surprise"] = 1
    path = tmp_path / "extra.pt"
    torch.save(d, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "surprise" in one_line(e, path)
    d = make_ckpt().to_dict()
    del d["preprocessing"]
    path = tmp_path / "lacking.pt"
    torch.save(d, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "preprocessing" in one_line(e, path)


def test_other_malformed_content(tmp_path):
    for change, word in (
        ({"format_version": 99}, "format_version"),
        ({"model": "unet"}, "model"),
        ({"preprocessing": {"normalize": "nope"}}, "preprocessing"),
    ):
        d = make_ckpt().to_dict()
        d.update(change)
        path = tmp_path / f"bad_{word}.pt"
        torch.save(d, path)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
        assert word in one_line(e, path)


def test_weights_of_another_model_name_the_file(tmp_path):
    d = make_ckpt(width=4).to_dict()
    d["model"]["args"]["width"] = 8  # the stored weights are width 4
    path = tmp_path / "mismatch.pt"
    torch.save(d, path)
    with pytest.raises(CheckpointError) as e:  # found at load time, before any model is built
        load_checkpoint(path)
    assert "do not fit" in one_line(e, path)
    ck = make_ckpt(width=4)
    ck.model_args = {**ck.model_args, "width": 8}
    ck.path = path
    with pytest.raises(CheckpointError) as e:  # an in-memory checkpoint is checked when built
        ck.build_model()
    assert "do not fit" in one_line(e, path)


def test_missing_file_and_folder(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="not found") as e:
        load_checkpoint(missing)
    one_line(e, missing)
    with pytest.raises(CheckpointError, match="folder") as e:
        load_checkpoint(tmp_path)
    one_line(e, tmp_path)


def test_sha256_and_latest_run_checkpoint(tmp_path):
    import hashlib

    f = tmp_path / "x.bin"
    f.write_bytes(b"liver" * 1000)
    assert file_sha256(f) == hashlib.sha256(b"liver" * 1000).hexdigest()
    assert latest_run_checkpoint(tmp_path / "runs") is None
    old = make_ckpt().save(tmp_path / "runs" / "a" / "checkpoints" / "best.pt")
    new = make_ckpt().save(tmp_path / "runs" / "b" / "checkpoints" / "best.pt")
    os.utime(old, (1_000_000, 1_000_000))
    assert latest_run_checkpoint(tmp_path / "runs") == new
    os.utime(new, (500_000, 500_000))
    assert latest_run_checkpoint(tmp_path / "runs") == old
    assert latest_run_checkpoint(tmp_path / "runs", name="last.pt") is None


# ---------------------------------------------------------------- every field is checked at load time


def _first_weight(d: dict) -> str:
    return next(k for k, v in d["state_dict"].items() if v.is_floating_point() and v.dim() == 4)


def _set(*keys, value):
    """A change to a checkpoint dict: ``d[k1][k2]... = value``."""

    def change(d: dict) -> None:
        target = d
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return change


def _del_weight(d: dict) -> None:
    del d["state_dict"][_first_weight(d)]


def _reshape_weight(d: dict) -> None:
    k = _first_weight(d)
    d["state_dict"][k] = torch.zeros(3, 3)


def _nan_weight(d: dict) -> None:
    k = _first_weight(d)
    d["state_dict"][k] = torch.full_like(d["state_dict"][k], float("nan"))


BAD_FIELDS = [
    ("model-name-unknown", _set("model", "name", value="evil"), "model.name"),
    ("model-name-not-str", _set("model", "name", value=3), "model.name"),
    ("model-args-not-dict", _set("model", "args", value=[4]), "model.args"),
    ("width-huge", _set("model", "args", "width", value=3000), "width"),
    ("width-zero", _set("model", "args", "width", value=0), "width"),
    ("width-str", _set("model", "args", "width", value="4"), "width"),
    ("width-float", _set("model", "args", "width", value=4.0), "width"),
    ("width-bool", _set("model", "args", "width", value=True), "width"),
    ("in-channels", _set("model", "args", "in_channels", value=3), "in_channels"),
    ("unknown-arg", _set("model", "args", "depth", value=5), "depth"),
    ("threshold-str", _set("threshold", value="abc"), "threshold"),
    ("threshold-3", _set("threshold", value=3.0), "threshold"),
    ("threshold-1", _set("threshold", value=1.0), "threshold"),
    ("threshold-0", _set("threshold", value=0.0), "threshold"),
    ("threshold-nan", _set("threshold", value=float("nan")), "threshold"),
    ("threshold-inf", _set("threshold", value=float("inf")), "threshold"),
    ("threshold-bool", _set("threshold", value=True), "threshold"),
    ("threshold-none", _set("threshold", value=None), "threshold"),
    ("preprocessing-not-dict", _set("preprocessing", value="scale"), "preprocessing"),
    ("normalize-type", _set("preprocessing", "normalize", value=123), "preprocessing.normalize"),
    ("size-str", _set("preprocessing", "size", value="ab"), "preprocessing.size"),
    ("size-float", _set("preprocessing", "size", value=[32.5, 32]), "preprocessing.size"),
    ("pad-str", _set("preprocessing", "pad_multiple", value="16"), "preprocessing.pad_multiple"),
    ("pad-zero", _set("preprocessing", "pad_multiple", value=0), "preprocessing.pad_multiple"),
    ("pad-not-fitting", _set("preprocessing", "pad_multiple", value=8), "preprocessing.pad_multiple"),
    ("window-nan", _set("preprocessing", "window", value=[float("nan"), 255.0]), "preprocessing.window"),
    ("window-str", _set("preprocessing", "window", value="0,255"), "preprocessing.window"),
    ("state-dict-not-dict", _set("state_dict", value=[1, 2]), "state_dict"),
    ("state-dict-value", _set("state_dict", "extra.weight", value="x"), "state_dict"),
    ("state-dict-missing", _del_weight, "state_dict"),
    ("state-dict-shape", _reshape_weight, "state_dict"),
    ("state-dict-nan", _nan_weight, "state_dict"),
    ("epoch-str", _set("epoch", value="3"), "epoch"),
    ("epoch-negative", _set("epoch", value=-1), "epoch"),
    ("history-str", _set("history", value="x"), "history"),
    ("history-items", _set("history", value=[1, 2]), "history"),
    ("best-str", _set("best", value="x"), "best"),
    ("best-nan", _set("best", value={"metric": "dice", "value": float("nan"), "epoch": 1}), "best"),
    ("config-list", _set("config", value=[1]), "config"),
    ("data-summary", _set("data_summary", value=3), "data_summary"),
    ("versions", _set("versions", value="x"), "versions"),
    ("optimizer", _set("optimizer", value="x"), "optimizer"),
    ("format-version-bool", _set("format_version", value=True), "format_version"),
]


@pytest.mark.parametrize("change,field", [pytest.param(c, f, id=i) for i, c, f in BAD_FIELDS])
def test_every_field_is_checked_at_load_time(tmp_path, change, field):
    d = make_ckpt().to_dict()
    change(d)
    path = tmp_path / "bad.pt"
    torch.save(d, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = one_line(e, path)
    assert field in msg, msg


def test_valid_edge_values_load(tmp_path):
    d = make_ckpt().to_dict()
    d["threshold"] = 0.01
    d["best"] = None
    d["preprocessing"]["size"] = [48, 40]
    d["preprocessing"]["window"] = [-100, 300.5]
    path = tmp_path / "edge.pt"
    torch.save(d, path)
    ck = load_checkpoint(path)
    assert ck.threshold == 0.01 and ck.preprocessing.size == (48, 40) and ck.preprocessing.window == (-100.0, 300.5)


def test_pickled_refusal_says_code_is_refused_for_safety(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVERSEG_TEST_MARKER", str(tmp_path / "executed"))
    d = make_ckpt().to_dict()
    d["config"] = {"payload": Boom()}
    path = tmp_path / "evil.pt"
    torch.save(d, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = one_line(e, path)
    assert "Python code or objects" in msg and "refused for safety" in msg, msg
    for advice in ("weights_only set to False", "Re-running", "add_safe_globals", "safe_globals", "trust"):
        assert advice not in msg, msg


def _eval_csvs(tmp: Path) -> Path:
    import numpy as np
    from PIL import Image

    (tmp / "d").mkdir()
    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(tmp / "d" / "0.png")
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(tmp / "d" / "0_mask.png")
    (tmp / "d" / "t_x.csv").write_text(f"X\n{tmp / 'd' / '0.png'}\n")
    (tmp / "d" / "t_y.csv").write_text(f"Y\n{tmp / 'd' / '0_mask.png'}\n")
    return tmp / "d" / "t_x.csv"


@pytest.mark.parametrize("cmd", ["export", "eval"])
@pytest.mark.parametrize(
    "change,field",
    [
        pytest.param(_set("model", "name", value="evil"), "model.name", id="model-evil"),
        pytest.param(_set("threshold", value="abc"), "threshold", id="threshold-abc"),
        pytest.param(_set("threshold", value=3.0), "threshold", id="threshold-3"),
        pytest.param(_set("model", "args", "width", value=3000), "width", id="width-3000"),
    ],
)
def test_export_and_eval_refuse_a_bad_field_with_one_line(tmp_path, cmd, change, field):
    from click.testing import CliRunner

    from liverseg.export.cli import main as export_main
    from liverseg.trainer.cli import eval_main

    d = make_ckpt(width=2).to_dict()
    change(d)
    path = tmp_path / "bad.pt"
    torch.save(d, path)
    if cmd == "export":
        res = CliRunner().invoke(export_main, [str(path), "--out", str(tmp_path / "e"), "--format", "onnx"])
    else:
        res = CliRunner().invoke(eval_main, [str(path), "--x", str(_eval_csvs(tmp_path)), "-q"])
    out = res.output + res.stderr
    assert "Traceback" not in out and isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, out
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and field in errors[0], res.stderr
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("cmd", ["export", "eval", "predict"])
def test_commands_refuse_a_pickled_checkpoint_for_safety(tmp_path, monkeypatch, cmd):
    from click.testing import CliRunner

    from liverseg.export.cli import main as export_main
    from liverseg.trainer.cli import eval_main, predict_main

    monkeypatch.setenv("LIVERSEG_TEST_MARKER", str(tmp_path / "executed"))
    d = make_ckpt(width=2).to_dict()
    d["config"] = {"payload": Boom()}
    path = tmp_path / "evil.pt"
    torch.save(d, path)
    x = _eval_csvs(tmp_path)
    args = {
        "export": [str(path), "--out", str(tmp_path / "e")],
        "eval": [str(path), "--x", str(x), "-q"],
        "predict": [str(x.parent / "0.png"), "--model", str(path), "-o", str(tmp_path / "p.png")],
    }[cmd]
    res = CliRunner().invoke({"export": export_main, "eval": eval_main, "predict": predict_main}[cmd], args)
    assert res.exit_code == 2 and not (tmp_path / "executed").exists(), res.output
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert "Python code or objects" in line and "refused for safety" in line, line
    assert "weights_only" not in line and "trust" not in line, line
