"""Training, checkpoints, resume, determinism, early stopping and liverseg-eval.

Tiny U-Nets (width 4) on synthetic 32x32 slices written as PNG with the study's CSVs;
one real-data test trains the study's 64-wide U-Net on the two seed-format slices.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from liverseg.checkpoint import load_checkpoint
from liverseg.core.errors import DeviceError
from liverseg.core.images import DataError, discover
from liverseg.trainer.augment import AugmentConfig, augment_batch
from liverseg.trainer.cli import eval_main, train_main
from liverseg.trainer.config import ConfigError, TrainConfig
from liverseg.trainer.evaluate import evaluate
from liverseg.trainer.train import EPOCH_COLUMNS, train

STUDY_CONFIG = {
    "model": "unet",
    "in_dim": 1,
    "out_dim": 1,
    "out_activation": "sigmoid",
    "tdata_x_path": "data/train_x.csv",
    "tdata_y_path": "data/train_y.csv",
    "vdata_x_path": "data/val_x.csv",
    "vdata_y_path": "data/val_y.csv",
    "lr": 1e-5,
    "optim": "adam",
    "loss": "bce",
    "train_batch_size": 1,
    "valid_batch_size": 1,
    "epochs": 7,
    "val_metrics": ["mPA", "mIoU"],
    "save_model": True,
    "seed": 42,
    "num_workers": 0,
}


def _slice(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A dark body with one bright 'liver' ellipse; the mask is the ellipse."""
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    img = rng.normal(40, 12, (h, w))
    img[mask] = rng.normal(125, 12, int(mask.sum()))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def write_dataset(
    root: Path,
    n_train: int = 8,
    n_val: int = 4,
    size=(32, 32),
    seed: int = 0,
    sizes: list[tuple[int, int]] | None = None,
) -> Path:
    """``root/data/{Images,Labels}`` and the study's four CSVs (paths relative to root)."""
    rng = np.random.default_rng(seed)
    (root / "data" / "Images").mkdir(parents=True, exist_ok=True)
    (root / "data" / "Labels").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_train + n_val):
        h, w = sizes[i] if sizes else size
        img, mask = _slice(rng, h, w)
        Image.fromarray(img).save(root / "data" / "Images" / f"{i:03d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "data" / "Labels" / f"{i:03d}_mask.png")
        rows.append((f"data/Images/{i:03d}.png", f"data/Labels/{i:03d}_mask.png"))
    for name, part in (("train", rows[:n_train]), ("val", rows[n_train:])):
        (root / "data" / f"{name}_x.csv").write_text("X\n" + "".join(f"{x}\n" for x, _ in part))
        (root / "data" / f"{name}_y.csv").write_text("Y\n" + "".join(f"{y}\n" for _, y in part))
    return root


def tiny_config(root: Path, **over) -> TrainConfig:
    d: dict[str, object] = {
        **STUDY_CONFIG,
        "lr": 3e-3,
        "train_batch_size": 4,
        "valid_batch_size": 4,
        "epochs": 1,
        "width": 4,
        "output_dir": str(root / "runs"),
        **over,
    }
    for k in ("tdata_x_path", "tdata_y_path", "vdata_x_path", "vdata_y_path"):
        d[k] = str(root / str(STUDY_CONFIG[k]))
    return TrainConfig.from_dict(d)


@pytest.fixture(autouse=True)
def one_thread(request):
    """Tiny models on a shared 2-core machine: one intra-op thread avoids OpenMP spin contention
    (a width-4 step took ~1 s with 2 threads under load, 0.09 s with 1). The 64-wide test keeps 2."""
    if request.node.get_closest_marker("realdata"):
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_dataset(tmp_path)


def saved(path: Path | None) -> Path:
    """A checkpoint path of a run that saves its model."""
    assert path is not None
    return path


def known(best: dict | None) -> dict:
    """A ``best`` record that a finished epoch has set."""
    assert best is not None
    return best


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- a run and its files


def test_run_writes_epoch_table_checkpoints_and_round_trips(data: Path):
    cfg = tiny_config(data, epochs=2, augment=True)
    res = train(cfg, data_root=data, progress=False)
    rows = _read_csv(res.run_dir / "epochs.csv")
    assert list(rows[0]) == list(EPOCH_COLUMNS)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(np.isfinite(float(r[c])) for r in rows for c in EPOCH_COLUMNS)
    assert res.run_dir.name.startswith("unet-w4-")
    assert res.best == res.run_dir / "checkpoints" / "best.pt" and res.best.exists()
    assert res.last == res.run_dir / "checkpoints" / "last.pt" and res.last.exists()
    assert (res.run_dir / "train.log").read_text().count("epoch 2/2") == 1
    saved_cfg = json.loads((res.run_dir / "config.json").read_text())
    assert saved_cfg["width"] == 4 and saved_cfg["augment"]["vflip"] == 0.5

    last = load_checkpoint(res.last)
    best = load_checkpoint(res.best)
    assert (last.model_name, last.model_args) == ("unet", {"in_channels": 1, "out_channels": 1, "width": 4})
    assert last.epoch == 2 and len(last.history) == 2 and last.optimizer is not None
    assert best.optimizer is None and best.epoch == known(best.best)["epoch"]
    assert known(best.best)["metric"] == "dice"
    assert last.preprocessing.pad_multiple == 16 and last.preprocessing.normalize == "scale"
    assert last.data_summary["train"]["n_images"] == 8 and last.data_summary["val"]["n_images"] == 4
    assert 0 < last.data_summary["train"]["mean_liver_fraction"] < 0.5
    assert last.config["lr"] == pytest.approx(3e-3) and last.versions["torch"] == torch.__version__

    # round trip: the reloaded weights reproduce the validation numbers of the in-training model
    val = discover(cfg.vdata_x_path, labels=cfg.vdata_y_path, root=data, need_labels=True)
    ev = evaluate(res.last, val, device="cpu", batch_size=3, progress=False)
    for name in ("mPA", "mIoU", "dice", "iou", "precision", "recall"):
        assert ev[name] == pytest.approx(float(rows[-1][name]), abs=1e-5), name
    assert len(ev["per_image"]) == 4 and ev["n_images"] == 4


def test_seed_determinism_and_resume_continue_exactly(data: Path):
    base = dict(epochs=2, augment=True, seed=7)
    full = train(tiny_config(data, **base), data_root=data, progress=False)
    first = train(tiny_config(data, **{**base, "epochs": 1}), data_root=data, progress=False)
    # same seed -> the same first epoch
    assert first.history[0]["train_loss"] == pytest.approx(full.history[0]["train_loss"], rel=1e-6)
    assert first.history[0]["val_loss"] == pytest.approx(full.history[0]["val_loss"], rel=1e-6)
    # resume from last.pt: the epoch count continues in the same run folder, on the same batches
    resumed = train(tiny_config(data, **{**base, "resume": str(first.last)}), data_root=data, progress=False)
    assert resumed.run_dir == first.run_dir
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert [int(r["epoch"]) for r in _read_csv(first.run_dir / "epochs.csv")] == [1, 2]
    assert load_checkpoint(saved(resumed.last)).epoch == 2
    assert resumed.history[1]["train_loss"] == pytest.approx(full.history[1]["train_loss"], rel=1e-5)
    # a different seed gives a different first epoch (so the checks above can fail)
    other = train(tiny_config(data, **{**base, "epochs": 1, "seed": 8}), data_root=data, progress=False)
    assert other.history[0]["train_loss"] != pytest.approx(full.history[0]["train_loss"], rel=1e-6)


def test_resume_refuses_finished_or_mismatched(data: Path):
    first = train(tiny_config(data), data_root=data, progress=False)
    with pytest.raises(ConfigError, match="epochs"):
        train(tiny_config(data, resume=str(first.last)), data_root=data, progress=False)
    with pytest.raises(ConfigError, match="resume"):
        train(tiny_config(data, epochs=2, width=8, resume=str(first.last)), data_root=data, progress=False)
    with pytest.raises(Exception, match="optimizer"):
        train(tiny_config(data, epochs=2, resume=str(first.best)), data_root=data, progress=False)


def test_early_stopping(data: Path):
    # min_delta 1.0: dice can never improve by that much, so the run stops after `patience` epochs
    res = train(tiny_config(data, epochs=6, early_stopping=2, min_delta=1.0), data_root=data, progress=False)
    assert res.stopped_early and [h["epoch"] for h in res.history] == [1, 2, 3]
    assert known(res.best_info)["epoch"] == 1
    assert "early stopping" in (res.run_dir / "train.log").read_text()


def test_save_model_false_and_path(data: Path, tmp_path: Path):
    res = train(tiny_config(data, save_model=False), data_root=data, progress=False)
    assert res.best is None and not (res.run_dir / "checkpoints").exists()
    assert (res.run_dir / "epochs.csv").exists()
    dest = tmp_path / "models" / "trained_model.pt"
    res = train(
        tiny_config(data, save_model=str(dest), keep_best="val_loss", loss="bce+dice"), data_root=data, progress=False
    )
    assert dest.exists() and known(load_checkpoint(dest).best)["metric"] == "val_loss"


def test_mixed_sizes_need_image_size_then_resize(tmp_path: Path):
    sizes = [(32, 32), (48, 40)] * 3
    root = write_dataset(tmp_path, n_train=4, n_val=2, sizes=sizes)
    with pytest.raises(DataError, match="image_size"):
        train(tiny_config(root), data_root=root, progress=False)
    res = train(tiny_config(root, image_size=[32, 32], normalize="zscore", loss="dice"), data_root=root, progress=False)
    ck = load_checkpoint(saved(res.last))
    assert ck.preprocessing.size == (32, 32) and ck.preprocessing.normalize == "zscore"
    # validation ran at the native sizes (one 32x32 and one 48x40 slice)
    assert ck.data_summary["val"]["sizes"] == {"32x32": 1, "48x40": 1}


def test_bad_data_is_named_before_training(data: Path):
    (data / "data" / "Images" / "002.png").unlink()
    with pytest.raises(DataError) as e:
        train(tiny_config(data), data_root=data, progress=False)
    assert "002.png" in str(e.value) and "train_x.csv row 4" in str(e.value)
    assert not (data / "runs").exists()  # nothing was started


def test_size_mismatch_is_named(data: Path):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(data / "data" / "Labels" / "009_mask.png")
    with pytest.raises(DataError) as e:
        train(tiny_config(data), data_root=data, progress=False)
    assert "009_mask.png" in str(e.value) and "val_x.csv row 3" in str(e.value)


def test_device_and_amp_errors(data: Path):
    with pytest.raises(ConfigError, match="amp"):
        tiny_config(data, device="cpu", amp="bf16")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            train(tiny_config(data, device="cuda"), data_root=data, progress=False)
        with pytest.raises(ConfigError, match="amp"):
            train(tiny_config(data, amp="fp16"), data_root=data, progress=False)


@pytest.mark.cuda
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_cuda_training_with_amp(data: Path, amp: str):
    res = train(
        tiny_config(data, device="cuda", amp=amp, epochs=2, augment=True, num_workers=1), data_root=data, progress=False
    )
    assert all(np.isfinite(h["train_loss"]) for h in res.history)
    ck = load_checkpoint(saved(res.last))
    assert ck.state_dict["outc.conv.weight"].device.type == "cpu"
    val = discover(str(data / "data/val_x.csv"), root=data, need_labels=True)
    ev_gpu = evaluate(saved(res.last), val, device="cuda", progress=False)
    ev_cpu = evaluate(saved(res.last), val, device="cpu", progress=False)
    assert ev_gpu["dice"] == pytest.approx(ev_cpu["dice"], abs=1e-3)
    if amp == "off":  # fp32 validation on the GPU matches the evaluation of the saved weights
        assert ev_gpu["dice"] == pytest.approx(res.history[-1]["dice"], abs=1e-3)


# ---------------------------------------------------------------- augmentation


def test_augment_flips_exact_and_masks_stay_binary():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 16 * 24, dtype=torch.float32).reshape(2, 1, 16, 24) % 255
    m = (x > 100).to(torch.uint8)
    ax, am = augment_batch(
        x, m, AugmentConfig(hflip=1, vflip=1, rotate=0, scale=0, intensity_scale=0, intensity_shift=0), g
    )
    assert torch.equal(ax, x.flip(-1).flip(-2)) and torch.equal(am, m.float().flip(-1).flip(-2))
    ax, am = augment_batch(x, m, AugmentConfig(), torch.Generator().manual_seed(1))
    assert ax.shape == x.shape and set(am.unique().tolist()) <= {0.0, 1.0}
    assert ax.min() >= 0 and ax.max() <= 255 and not torch.equal(ax, x)
    bx, bm = augment_batch(x, m, AugmentConfig(), torch.Generator().manual_seed(1))
    assert torch.equal(ax, bx) and torch.equal(am, bm)


def test_augment_config_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="vfilp.*did you mean 'vflip'"):
        TrainConfig.from_dict({**STUDY_CONFIG, "augment": {"vfilp": 0.5}})
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig.from_dict({**STUDY_CONFIG, "augment": {"hflip": 2}})


# ---------------------------------------------------------------- command lines


def test_train_cli_bad_config_exit_2(tmp_path: Path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**STUDY_CONFIG, "epoch": 3}))
    r = CliRunner().invoke(train_main, [str(cfg)])
    assert r.exit_code == 2
    assert "unknown key 'epoch'" in r.output and "did you mean 'epochs'" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(train_main, [str(cfg), "--set", "nonsense"])
    assert r.exit_code == 2 and "key=value" in r.output


def test_train_cli_missing_data_exit_2(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_text(json.dumps(STUDY_CONFIG))
    r = CliRunner().invoke(train_main, ["c.json", "-q"])
    assert r.exit_code == 2 and "train_x.csv" in r.output and "Traceback" not in r.output


def test_eval_cli(data: Path, tmp_path: Path):
    res = train(tiny_config(data), data_root=data, progress=False)
    out = tmp_path / "eval" / "metrics.json"
    r = CliRunner().invoke(
        eval_main,
        [
            str(res.best),
            "--x",
            str(data / "data" / "val_x.csv"),
            "--data-root",
            str(data),
            "--batch-size",
            "3",
            "--device",
            "cpu",
            "--json",
            str(out),
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "mPA" in r.output and "micro" in r.output
    doc = json.loads(out.read_text())
    assert doc["n_images"] == 4 and len(doc["per_image"]) == 4
    assert doc["checkpoint"]["model"]["args"]["width"] == 4 and doc["checkpoint"]["threshold"] == 0.5
    val = discover(data / "data" / "val_x.csv", root=data, need_labels=True)
    direct = evaluate(saved(res.best), val, device="cpu", batch_size=1, progress=False)
    for k in ("mPA", "mIoU", "dice", "micro_dice", "micro_iou"):
        assert doc[k] == pytest.approx(direct[k], abs=1e-7)
    # the study's per-image-then-average (macro) differs from pooled (micro) in general
    assert {"dice", "micro_dice", "mPA", "micro_mPA"} <= set(doc)
    r = CliRunner().invoke(eval_main, [str(res.best), "--x", str(data / "data" / "val_x.csv"), "--device", "gpu"])
    assert r.exit_code == 2 and "--device" in r.output
    r = CliRunner().invoke(eval_main, [str(data / "data" / "val_x.csv"), "--x", str(data / "data" / "val_x.csv")])
    assert r.exit_code == 2 and "not a loadable checkpoint" in r.output


# ---------------------------------------------------------------- the study's config on its own data


@pytest.mark.realdata
@pytest.mark.slow
def test_study_config_trains_on_seed_format(seed_format: Path, tmp_path: Path, monkeypatch):
    """The study's train_config.json, verbatim, on the two reference slices (64-wide U-Net, 512x512)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "train_config.json").write_text(json.dumps(STUDY_CONFIG, indent=4))
    (tmp_path / "data").mkdir()
    for split in ("train", "val"):  # the study's file names; both lists are the seed test list
        shutil.copyfile(seed_format / "data" / "test_x.csv", tmp_path / "data" / f"{split}_x.csv")
        shutil.copyfile(seed_format / "data" / "test_y.csv", tmp_path / "data" / f"{split}_y.csv")
    r = CliRunner().invoke(
        train_main, ["configs/train_config.json", "--data-root", str(seed_format), "--set", "epochs=1", "-q"]
    )
    assert r.exit_code == 0, r.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("unet-w64-")
    rows = _read_csv(run_dir / "epochs.csv")
    assert len(rows) == 1 and list(rows[0]) == list(EPOCH_COLUMNS)
    ck = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert ck.model_args["width"] == 64 and ck.config["lr"] == 1e-5 and ck.config["loss"] == "bce"
    assert ck.data_summary["train"]["sizes"] == {"512x512": 2}
    assert 0 < ck.data_summary["train"]["mean_liver_fraction"] < 0.5


def test_cosine_lr_schedule_is_a_function_of_the_epoch():
    from liverseg.trainer.config import ConfigError, TrainConfig
    from liverseg.trainer.train import lr_at

    base = {"model": "unet", "tdata_x_path": "a.csv", "vdata_x_path": "b.csv", "lr": 0.01, "epochs": 4}
    const = TrainConfig.from_dict(base)
    assert [lr_at(const, e) for e in (1, 2, 3, 4)] == [0.01] * 4  # the study's constant rate by default
    cos = TrainConfig.from_dict({**base, "lr_schedule": "cosine"})
    # 0.01 * 0.5 * (1 + cos(pi * (e - 1) / 4)) for e = 1..4: 0.01, 0.0085355, 0.005, 0.0014645
    assert [round(lr_at(cos, e), 7) for e in (1, 2, 3, 4)] == [0.01, 0.0085355, 0.005, 0.0014645]
    with pytest.raises(ConfigError, match="lr_schedule"):
        TrainConfig.from_dict({**base, "lr_schedule": "step"})


# ---------------------------------------------------------------- runs that used to fail late


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_output_dir_that_is_a_file_is_refused_before_any_work(data: Path, where: str):
    blocker = data / "runs.txt"
    blocker.write_text("not a folder\n")
    out = blocker if where == "file" else blocker / "runs"
    with pytest.raises(ConfigError) as e:
        train(tiny_config(data, output_dir=str(out)), data_root=data, progress=False)
    assert "key 'output_dir'" in str(e.value) and str(blocker) in str(e.value), str(e.value)
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.parametrize("where", ["folder", "under-a-file"])
def test_save_model_that_is_a_folder_is_refused_before_any_work(data: Path, where: str):
    target = data / "models"
    target.mkdir()
    if where == "under-a-file":
        (data / "models.txt").write_text("x")
        target = data / "models.txt" / "best.pt"
    with pytest.raises(ConfigError) as e:
        train(tiny_config(data, save_model=str(target)), data_root=data, progress=False)
    assert "key 'save_model'" in str(e.value), str(e.value)
    assert not (data / "runs").exists()  # no run folder was started


def test_a_diverging_run_stops_with_one_line_and_never_saves_a_nan_best(data: Path, tmp_path: Path):
    # one batch per epoch (8 training slices, batch 8): the first step blows the weights up with a finite
    # but absurd learning rate, so the loss is NaN only in validation -- this used to write a NaN best.pt
    # and exit 0.
    cfg = tiny_config(data, lr=1e30, optim="sgd", train_batch_size=8, epochs=1)
    with pytest.raises(ConfigError) as e:
        train(cfg, data_root=data, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "epoch 1/1" in msg and "key 'lr'" in msg, msg
    assert not list((data / "runs").glob("*/checkpoints/*.pt")), "a diverged epoch must never be saved"
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg.to_dict()))
    r = CliRunner().invoke(train_main, [str(path), "-q", "--data-root", str(data)])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1, r.stderr


def test_a_nan_validation_metric_never_becomes_best(data: Path, monkeypatch):
    import liverseg.trainer.train as train_module

    real = train_module.validate
    calls = []

    def nan_in_epoch_2(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            out = {**out, "dice": float("nan")}
        return out

    monkeypatch.setattr(train_module, "validate", nan_in_epoch_2)
    cfg = tiny_config(data, epochs=3)
    with pytest.raises(ConfigError, match="epoch 2/3.*dice"):
        train(cfg, data_root=data, progress=False)
    (run_dir,) = (data / "runs").iterdir()
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best.epoch == 1 and known(best.best)["epoch"] == 1
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt").epoch == 1
    assert [int(r["epoch"]) for r in _read_csv(run_dir / "epochs.csv")] == [1]


def test_lr_infinity_is_refused_before_a_run_folder(data: Path, tmp_path: Path):
    cfg = tiny_config(data).to_dict()
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg).replace('"lr": 0.003', '"lr": Infinity'))
    assert "Infinity" in path.read_text()
    r = CliRunner().invoke(train_main, [str(path), "-q", "--data-root", str(data)])
    assert r.exit_code == 2 and "key 'lr'" in r.stderr and "Traceback" not in r.output, r.output
    assert not (data / "runs").exists()


@pytest.mark.parametrize("normalize", ["zscore", "scale"])
def test_validation_masks_are_the_exported_models_on_a_slice_without_contrast(normalize):
    from liverseg.core.metrics import SegmentationMetrics
    from liverseg.core.preprocess import Preprocessing
    from liverseg.models.pipeline import SegmentationPipeline
    from liverseg.trainer.train import validate

    class Everywhere(torch.nn.Module):  # a network that calls every pixel liver
        def forward(self, z):
            return torch.full_like(z, 10.0)

    pp = Preprocessing(normalize=normalize, pad_multiple=1)
    blank = torch.zeros(1, 16, 16)  # an all-air (padding) slice: nothing to tell liver from
    truth = torch.zeros(1, 16, 16)
    loss = torch.nn.BCEWithLogitsLoss()
    batches: Any = [[(blank, truth)]]  # what a DataLoader of (image, mask) pairs yields
    out = validate(Everywhere(), batches, pp, torch.device("cpu"), loss, threshold=0.5)
    _, exported = SegmentationPipeline(Everywhere(), pp)(blank[None].to(torch.uint8))
    called = bool(exported.any())
    assert called == (normalize == "scale")  # the export's rule: z-score slices without contrast show no liver
    expected = SegmentationMetrics()
    expected.update(exported[0, 0].bool().numpy(), truth[0].bool().numpy())
    want = expected.compute()
    assert (out["mPA"], out["mIoU"]) == (want["mPA"], want["mIoU"])  # the numbers liverseg-eval gives the export
    assert want["mPA"] == (0.0 if called else 1.0)


def test_init_from_starts_a_new_training_from_a_checkpoints_weights(data: Path, tmp_path: Path):
    """Fine-tuning: the first epoch starts from the given weights (with lr 0 they stay), epoch 1, a new
    optimizer; a checkpoint of another model is refused by the key's name."""
    first = train(tiny_config(data, output_dir=str(tmp_path / "a")), data_root=data, progress=False)
    start = load_checkpoint(saved(first.last))
    res = train(
        tiny_config(data, output_dir=str(tmp_path / "b"), init_from=str(saved(first.last)), lr=0.0),
        data_root=data,
        progress=False,
    )
    tuned = load_checkpoint(saved(res.last))
    assert tuned.epoch == 1 and len(tuned.history) == 1
    for name, w in start.state_dict.items():
        if w.dtype.is_floating_point and "running" not in name:  # BatchNorm statistics move in train mode
            assert torch.equal(w, tuned.state_dict[name]), name
    with pytest.raises(ConfigError, match="init_from"):
        train(tiny_config(data, width=8, init_from=str(saved(first.last))), data_root=data, progress=False)


@pytest.mark.realdata
def test_volume_slices_for_training(shared_data: Path, tmp_path: Path):
    """liverseg.trainer.slices: every slice in the contract window and two others, masks 0/255, the study's CSVs;
    totalseg-example's no-liver slices only from more than 5 cm below its labelled liver."""
    from liverseg.trainer.slices import main as slices_main

    slices_main(["--data", str(shared_data), "--out", str(tmp_path / "s")])
    rows = list(csv.DictReader(open(tmp_path / "s" / "manifest.csv")))
    assert len(rows) == 3 * (128 + 95)  # lits-117's 128 slices; totalseg-example's 112 less 17 unlabelled
    for source, n in (("lits-117", 128), ("totalseg-example", 95)):
        mine = [r for r in rows if r["source"] == source]
        assert len([r for r in mine if r["window"] == "standard"]) == n
    empty = {int(r["slice"]) for r in rows if r["source"] == "totalseg-example" and int(r["liver_pixels"]) == 0}
    assert empty == set(range(65))
    x = (tmp_path / "s" / "x.csv").read_text().splitlines()
    assert x[0] == "X" and len(x) == len(rows) + 1
    mask = np.asarray(Image.open(rows[0]["mask"]))
    assert set(np.unique(mask)) <= {0, 255}
