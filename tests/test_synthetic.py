"""Synthetic CT slices (liverseg.apps.synthetic) and the demo pipeline (liverseg.apps.demo)."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from liverseg.apps.synthetic import Patient, make_slice, preview_grid, write_dataset
from liverseg.core.images import discover, read_pair


def slices(seed: int, n: int, size=(128, 128)):
    rng = np.random.default_rng(seed)
    return [make_slice(rng, size) for _ in range(n)]


# ---------------------------------------------------------------- one slice


@pytest.mark.parametrize("size", [(128, 128), (64, 96), (100, 80), (256, 256)])
def test_slice_types_and_shapes(size):
    image, mask = make_slice(np.random.default_rng(0), size)
    assert image.dtype == np.uint8 and image.shape == size
    assert mask.dtype == bool and mask.shape == size


def test_deterministic_from_the_seed():
    a = slices(7, 3)
    b = slices(7, 3)
    c = slices(8, 3)
    for (ia, ma), (ib, mb) in zip(a, b):
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)
    assert not all(np.array_equal(ia, ic) for (ia, _), (ic, _) in zip(a, c))


def test_gray_levels_look_like_the_studys_pngs():
    rng = np.random.default_rng(1)
    liver_medians, outside, bright = [], [], []
    for _ in range(12):
        p = Patient.sample(rng)
        image, mask = make_slice(rng, (128, 128), patient=p, z=0.7)
        assert mask.sum() > 300  # at z = 0.7 the liver is large
        liver_medians.append(np.median(image[mask]))
        outside.append(image[:4, :].mean())  # the corners/top rows are air
        bright.append(image.max())
        # the liver is textured and noisy, not flat
        assert 3 < image[mask].std() < 30
    assert all(95 <= m <= 145 for m in liver_medians), liver_medians
    assert max(outside) < 3  # air and fat clip to 0
    assert min(bright) == 255  # bone saturates the 0..255 window


def test_liver_is_on_the_image_left_and_spine_at_the_back():
    rng = np.random.default_rng(2)
    for _ in range(10):
        image, mask = make_slice(rng, (128, 128), z=0.75)
        ys, xs = np.nonzero(mask)
        assert xs.mean() < 64  # radiological view: the patient's right is the image's left
        # bone-bright pixels near the midline are the vertebra: in the posterior (lower) half
        vy, vx = np.nonzero(image >= 250)
        mid = np.abs(vx - 64) < 8
        assert mid.sum() > 10 and np.median(vy[mid]) > 72


def test_distractors_overlap_the_livers_gray_range():
    rng = np.random.default_rng(3)
    shares = []
    for _ in range(10):
        image, mask = make_slice(rng, (128, 128), z=0.8)
        lo, hi = np.percentile(image[mask], [25, 75])
        in_range = (image >= lo) & (image <= hi)
        shares.append((in_range & ~mask).sum() / max(1, (in_range & mask).sum()))
    # other organs (spleen, IVC, kidneys) share the liver's gray levels: intensity alone is not enough
    assert np.mean(shares) > 0.1, shares


def test_some_slices_have_no_liver():
    masks = [m for _, m in slices(4, 60)]
    empty = sum(1 for m in masks if not m.any())
    assert 2 <= empty <= 25  # p_empty = 0.15 of 60
    p = Patient.sample(np.random.default_rng(5))
    _, m = make_slice(np.random.default_rng(6), patient=p, z=p.liver_range[0] * 0.5)
    assert not m.any()


def test_liver_grows_from_its_tip_along_the_patient():
    rng = np.random.default_rng(9)
    p = Patient.sample(rng)
    areas = [make_slice(rng, (96, 96), patient=p, z=z)[1].sum() for z in np.linspace(0.0, p.liver_range[1], 6)]
    assert areas[0] == 0
    assert areas[-1] > areas[1] and areas[-1] > 200


def test_fast_enough():
    rng = np.random.default_rng(0)
    make_slice(rng)
    t = time.process_time()
    for _ in range(30):
        make_slice(rng, (128, 128))
    ms = (time.process_time() - t) / 30 * 1e3
    assert ms < 40, f"{ms:.1f} ms CPU per 128x128 slice"  # ~5-7 ms measured; generous for a shared machine


def test_too_small_size_is_refused():
    with pytest.raises(ValueError, match="size"):
        make_slice(np.random.default_rng(0), (4, 4))


def test_preview_grid_draws_outlines():
    pairs = slices(0, 3, (32, 32))
    sheet = preview_grid([i for i, _ in pairs], [m for _, m in pairs], cols=2)
    assert sheet.shape == (64, 64, 3) and sheet.dtype == np.uint8
    has_liver = any(m.any() for _, m in pairs)
    red = (sheet[..., 0] == 255) & (sheet[..., 1] == 0) & (sheet[..., 2] == 0)
    assert red.any() == has_liver


# ---------------------------------------------------------------- datasets on disk


def test_write_dataset_study_layout(tmp_path):
    info = write_dataset(tmp_path, 10, size=(48, 64), seed=1, slices_per_patient=4)
    assert info["n"] == 10 and info["n_patients"] == 3 and info["layout"] == "study"
    data = tmp_path / "data"
    assert sorted(p.name for p in (data / "Images").iterdir())[:2] == ["000.png", "001.png"]
    assert (data / "Labels" / "009_mask.png").exists()
    with Image.open(data / "Images" / "000.png") as im:
        assert im.mode == "RGB" and im.size == (64, 48)  # as the study's files: RGB with R=G=B
        rgb = np.asarray(im)
        assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    with Image.open(data / "Labels" / "000_mask.png") as im:
        assert im.mode == "L" and set(np.unique(np.asarray(im))) <= {0, 255}
    pairs = pd.read_csv(data / "data_pairs.csv")
    assert list(pairs.columns) == ["X", "Y"] and pairs["X"][3] == "data/Images/003.png"
    manifest = pd.read_csv(data / "manifest.csv", dtype={"id": str})
    assert list(manifest["patient"]) == ["synth000"] * 4 + ["synth001"] * 4 + ["synth002"] * 2
    assert list(manifest["slice_idx"][:4]) == [0, 1, 2, 3]
    assert (manifest["z"].diff()[1:4] > 0).all()  # consecutive slices climb through one patient
    samples = discover(data / "data_pairs.csv", root=tmp_path, need_labels=True)
    for s, liver in zip(samples, manifest["liver_pixels"]):
        img, m = read_pair(s)
        assert img.shape == (48, 64) and int(m.sum()) == liver
    meta = json.loads((data / "synthetic.json").read_text())
    assert meta["seed"] == 1 and meta["n"] == 10


def test_write_dataset_is_reproducible(tmp_path):
    write_dataset(tmp_path / "a", 5, size=(40, 40), seed=11)
    write_dataset(tmp_path / "b", 5, size=(40, 40), seed=11)
    write_dataset(tmp_path / "c", 5, size=(40, 40), seed=12)
    for name in ("Images/002.png", "Labels/004_mask.png", "manifest.csv"):
        assert (tmp_path / "a/data" / name).read_bytes() == (tmp_path / "b/data" / name).read_bytes()
    assert (tmp_path / "a/data/Images/002.png").read_bytes() != (tmp_path / "c/data/Images/002.png").read_bytes()


@pytest.mark.parametrize("layout", ["folders", "flat"])
def test_other_layouts_read_back(tmp_path, layout):
    info = write_dataset(tmp_path, 4, size=(32, 32), seed=2, layout=layout, slices_per_patient=2)
    samples = discover(info["source"], need_labels=True)
    assert len(samples) == 4
    manifest = pd.read_csv(info["manifest"])
    assert manifest["patient"].nunique() == 2
    for s in samples:
        img, m = read_pair(s)
        assert img.shape == (32, 32)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        write_dataset(tmp_path, 2, layout="nifti")
    with pytest.raises(ValueError, match="n must be"):
        write_dataset(tmp_path, 0)


def test_grouped_split_keeps_each_patient_in_one_split(tmp_path):
    from liverseg.trainer.split import load_source, split_indices

    write_dataset(tmp_path, 40, size=(32, 32), seed=0, slices_per_patient=5)
    samples, groups = load_source(tmp_path / "data" / "manifest.csv", root=tmp_path, group_by="patient")
    assert groups is not None
    assert len(samples) == 40 and len(set(groups)) == 8
    parts = split_indices(len(samples), groups, 0.2, 0.2, seed=0)
    owner: dict[str, str] = {}
    for name, idx in parts.items():
        for i in idx:
            assert owner.setdefault(groups[i], name) == name
    assert sorted(i for idx in parts.values() for i in idx) == list(range(40))


# ---------------------------------------------------------------- the demo


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    from liverseg.apps.demo import main

    out = tmp_path_factory.mktemp("demo") / "run"
    result = CliRunner().invoke(main, ["--quick", "--out", str(out), "--quiet", "--device", "cpu", "--threads", "1"])
    return out, result


def test_quick_demo_runs_every_stage(quick_demo):
    out, result = quick_demo
    assert result.exit_code == 0, result.output + repr(result.exception)
    stages = ["data", "split", "eda", "train", "evaluate", "export", "infer", "bench"]
    for stage in stages:
        assert f"] {stage}:" in result.output and f"-- {stage} done in" in result.output
    for metric in ("mPA", "mIoU", "dice", "iou", "precision", "recall"):
        assert f"\n{metric} " in result.output  # the metric table
    summary = json.loads((out / "demo.json").read_text())
    assert summary["stages"] == stages
    assert set(summary["timings_s"]) == set(stages)
    assert summary["results"]["data"]["n"] == 24
    split = summary["results"]["split"]
    assert sum(v["slices"] for v in split.values()) == 24 and all(v["patients"] >= 1 for v in split.values())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == split["test"]["slices"] and len(metrics["per_image"]) == metrics["n_images"]
    assert 0.0 <= metrics["mPA"] <= 1.0 and 0.0 <= metrics["dice"] <= 1.0
    # later stages: figures, exported files with parity, inference run with its report, benchmark table
    assert (out / "eda" / "eda.html").exists()
    assert json.loads((out / "export" / "parity.json").read_text())["ok"] is True
    assert (out / "export" / "model.onnx").exists() and (out / "export" / "model.int8.onnx").exists()
    infer = json.loads((out / "infer" / "summary.json").read_text())
    assert infer["n_ok"] == split["test"]["slices"] and infer["n_failed"] == 0
    assert (out / "infer" / "report.html").exists()
    assert len(list((out / "infer" / "masks").glob("*_pred.png"))) == infer["n_ok"]
    assert (out / "bench" / "latest.md").exists()


def test_quick_demo_config_is_the_studys_format(quick_demo):
    from liverseg.trainer.config import TrainConfig

    out, result = quick_demo
    assert result.exit_code == 0
    raw = json.loads((out / "config.json").read_text())
    study_keys = [
        "model",
        "in_dim",
        "out_dim",
        "out_activation",
        "tdata_x_path",
        "tdata_y_path",
        "vdata_x_path",
        "vdata_y_path",
        "lr",
        "optim",
        "loss",
        "train_batch_size",
        "valid_batch_size",
        "epochs",
        "val_metrics",
        "save_model",
        "seed",
        "num_workers",
    ]
    assert list(raw)[: len(study_keys)] == study_keys
    cfg = TrainConfig.from_json(out / "config.json")
    assert cfg.model == "unet" and cfg.width == 4 and cfg.epochs == 1
    x = pd.read_csv(cfg.tdata_x_path)
    assert list(x.columns) == ["X"] and x["X"][0].startswith("data/Images/")
    runs = list((out / "runs").glob("unet-w4-*/checkpoints/best.pt"))
    assert len(runs) == 1


def test_demo_stage_alone_finds_earlier_outputs(quick_demo):
    from liverseg.apps.demo import main

    out, first = quick_demo
    assert first.exit_code == 0
    result = CliRunner().invoke(
        main, ["--quick", "--out", str(out), "--quiet", "--stages", "evaluate", "--device", "cpu", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "[1/1] evaluate" in result.output and "best.pt" in result.output


def test_demo_stage_without_its_inputs_is_a_clean_error(tmp_path):
    from liverseg.apps.demo import main

    result = CliRunner().invoke(main, ["--out", str(tmp_path / "empty"), "--stages", "split", "--quiet"])
    assert result.exit_code == 1
    assert "run the 'data' stage first" in result.output


def test_demo_options():
    from liverseg.apps.demo import STAGES, main

    runner = CliRunner()
    listed = runner.invoke(main, ["--list-stages"])
    assert listed.exit_code == 0
    assert [line.split()[0] for line in listed.output.strip().splitlines()] == [s.name for s in STAGES]
    bad = runner.invoke(main, ["--stages", "data,fly"])
    assert bad.exit_code == 2 and "fly" in bad.output
    bad = runner.invoke(main, ["--device", "gpu7", "--stages", "data"])
    assert bad.exit_code == 2 and "--device" in bad.output


def test_register_stage_extends_the_list(monkeypatch, tmp_path):
    import liverseg.apps.demo as demo

    monkeypatch.setattr(demo, "STAGES", list(demo.STAGES))
    seen = []
    demo.register_stage(demo.Stage("hello", lambda ctx: seen.append(ctx.run_dir), "a test stage"), after="data")
    assert [s.name for s in demo.STAGES][:3] == ["data", "hello", "split"]
    with pytest.raises(ValueError, match="already"):
        demo.register_stage(demo.Stage("hello", lambda ctx: None))
    with pytest.raises(ValueError, match="no stage"):
        demo.register_stage(demo.Stage("x", lambda ctx: None), after="nope")
    ctx = demo.run_demo(
        tmp_path, demo.DemoSettings.quick(), demo.select_stages("hello"), progress=False, echo=lambda s: None
    )
    assert seen == [tmp_path] and "hello" in ctx.timings
    assert json.loads((tmp_path / "demo.json").read_text())["stages"] == ["hello"]


# ids without the word "cuda": conftest skips items whose keywords hold it when no GPU is present
@pytest.mark.parametrize("device", [pytest.param("cuda", id="plain"), pytest.param("cuda:0", id="indexed")])
def test_demo_checks_the_device_before_any_stage(tmp_path, monkeypatch, device):
    """A CUDA device that cannot be used is exit 2 before the first stage (it used to fail in 'train', the 4th)."""
    import torch

    from liverseg.apps.demo import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["--out", str(out), "--device", device, "--quick", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "== [" not in result.output, "a stage ran before the device was checked"
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "CUDA" in errors[0], result.stderr
    assert not (out / "data").exists()


def test_demo_checks_onnxruntime_cuda_before_any_stage_when_infer_runs(tmp_path, monkeypatch):
    import onnxruntime as ort
    import torch

    from liverseg.apps.demo import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # torch sees a GPU ...
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])  # ... ORT has no CUDA
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["--out", str(out), "--device", "cuda", "--quick", "--quiet"])
    assert result.exit_code == 2 and "== [" not in result.output, result.output
    assert "CUDA execution provider" in result.stderr and "'infer' stage" in result.stderr, result.stderr
