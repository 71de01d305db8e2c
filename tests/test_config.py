"""TrainConfig: the study's file loads verbatim; every bad key is named before any work."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from liverseg.trainer.augment import AugmentConfig
from liverseg.trainer.config import ConfigError, TrainConfig, parse_override

# configs/train_config.json of the study (Dubois & Dzadon 2024), key for key
STUDY = {
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
STUDY_TEXT = """{
    "model"            : "unet",
    "in_dim"           : 1,
    "out_dim"          : 1,
    "out_activation"   : "sigmoid",
    "tdata_x_path"      : "data/train_x.csv",
    "tdata_y_path"      : "data/train_y.csv",
    "vdata_x_path"      : "data/val_x.csv",
    "vdata_y_path"      : "data/val_y.csv",
    "lr"               : 1e-5,
    "optim"            : "adam",
    "loss"             : "bce",
    "train_batch_size" : 1,
    "valid_batch_size" : 1,
    "epochs"           : 7,
    "val_metrics"      : ["mPA", "mIoU"],
    "save_model"       : true,
    "seed"             : 42,
    "num_workers"      : 0
}
"""


def test_study_config_verbatim(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train_config.json").write_text(STUDY_TEXT)
    cfg = TrainConfig.from_json("train_config.json")
    for key, value in STUDY.items():
        got = getattr(cfg, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    # the study's defaults for what it never set
    assert cfg.model_width == 64 and cfg.device == "auto" and cfg.augment is None and cfg.threshold == 0.5
    assert cfg.model_args() == {"in_channels": 1, "out_channels": 1, "width": 64}
    d = cfg.to_dict()
    assert {k: d[k] for k in STUDY} == STUDY
    assert TrainConfig.from_dict(json.loads(json.dumps(d))) == cfg  # config.json reloads to the same config


def test_baseline_and_extensions():
    cfg = TrainConfig.from_dict(
        {
            **STUDY,
            "model": "baseline",
            "width": 8,
            "image_size": 256,
            "augment": True,
            "loss": "bce+dice",
            "normalize": "zscore",
            "keep_best": "val_loss",
            "early_stopping": 3,
            "device": "cuda:0",
            "amp": "bf16",
            "save_model": "m.pt",
        }
    )
    assert cfg.image_size == (256, 256) and cfg.augment == AugmentConfig() and cfg.save_model == "m.pt"
    assert TrainConfig.from_dict({**STUDY, "model": "baseline"}).model_width == 64
    rotated = TrainConfig.from_dict({**STUDY, "augment": {"rotate": 5}}).augment
    assert rotated is not None and rotated.rotate == 5.0
    assert TrainConfig.from_dict({**STUDY, "augment": False}).augment is None


@pytest.mark.parametrize(
    "key,suggest",
    [("epoch", "epochs"), ("learning_rate", None), ("val_metric", "val_metrics"), ("imagesize", "image_size")],
)
def test_unknown_key_named_with_suggestion(key, suggest):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({**STUDY, key: 1}, source="cfg.json")
    msg = str(e.value)
    assert msg.startswith("cfg.json: ") and f"unknown key {key!r}" in msg
    if suggest:
        assert f"did you mean {suggest!r}" in msg
    else:
        assert "valid keys" in msg


@pytest.mark.parametrize(
    "key,value,expect",
    [
        ("lr", "fast", "expected a number"),
        ("lr", True, "expected a number"),
        ("epochs", 7.5, "expected an integer"),
        ("train_batch_size", True, "expected an integer"),
        ("train_batch_size", 0, ">= 1"),
        ("seed", "42", "expected an integer"),
        ("val_metrics", "mPA", "list of metric names"),
        ("val_metrics", ["mPA", "accuracy"], "unknown metric 'accuracy'"),
        ("save_model", 1, "true, false or a file path"),
        ("tdata_x_path", 3, "expected a string"),
        ("image_size", [256], "[height, width]"),
        ("width", 0, ">= 1"),
        ("threshold", 1.5, "<= 1"),
        ("num_workers", -1, ">= 0"),
        ("in_dim", 3, "must be 1"),
        ("out_dim", 2, "must be 1"),
        ("deterministic", "yes", "true or false"),
    ],
)
def test_wrong_type_named(key, value, expect):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({**STUDY, key: value})
    assert f"key {key!r}" in str(e.value) and expect in str(e.value)


@pytest.mark.parametrize(
    "key,value",
    [
        ("model", "resnet"),
        ("optim", "rmsprop"),
        ("loss", "mse"),
        ("out_activation", "softmax"),
        ("normalize", "minmax"),
        ("device", "gpu"),
        ("amp", "fp8"),
        ("keep_best", "f1"),
    ],
)
def test_bad_enum_values(key, value):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({**STUDY, key: value})
    assert f"key {key!r}" in str(e.value) and repr(value) in str(e.value)


@pytest.mark.parametrize("key", ["model", "tdata_x_path", "vdata_x_path"])
def test_missing_required_key(key):
    d = {k: v for k, v in STUDY.items() if k != key}
    with pytest.raises(ConfigError, match=f"missing required key '{key}'"):
        TrainConfig.from_dict(d)


def test_amp_needs_cuda_device():
    with pytest.raises(ConfigError, match="amp.*CUDA"):
        TrainConfig.from_dict({**STUDY, "amp": "fp16", "device": "cpu"})


def test_config_is_frozen():
    cfg = TrainConfig.from_dict(STUDY)
    key = "lr"
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, key, 1.0)  # the assignment mypy refuses statically, tried at run time


def test_bad_json_and_paths(tmp_path: Path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "unet",\n "lr": }')
    with pytest.raises(ConfigError, match="bad.json: not valid JSON \\(line 2"):
        TrainConfig.from_json(bad)
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_json(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        TrainConfig.from_json(tmp_path / "list.json")

    # CSV paths: relative to the current directory first, then to the config's folder
    cfg_dir = tmp_path / "configs"
    (cfg_dir / "data").mkdir(parents=True)
    (cfg_dir / "data" / "train_x.csv").write_text("X\n")
    (cfg_dir / "c.json").write_text(json.dumps(STUDY))
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "val_x.csv").write_text("X\n")
    monkeypatch.chdir(work)
    cfg = TrainConfig.from_json(cfg_dir / "c.json")
    assert cfg.tdata_x_path == str(cfg_dir / "data" / "train_x.csv")  # found beside the config
    assert cfg.vdata_x_path == "data/val_x.csv"  # found from the cwd: kept as given
    assert cfg.tdata_y_path == "data/train_y.csv"  # found nowhere: kept, the data check names it
    cfg = TrainConfig.from_json(cfg_dir / "c.json", overrides={"epochs": 1})
    assert cfg.epochs == 1


def test_parse_override():
    assert parse_override("epochs=3") == ("epochs", 3)
    assert parse_override("image_size=[256,256]") == ("image_size", [256, 256])
    assert parse_override("device=cuda") == ("device", "cuda")
    assert parse_override("augment=true") == ("augment", True)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("epochs")


# ---------------------------------------------------------------- configs that used to fail late


def _json_with(tmp_path: Path, text: str) -> Path:
    """STUDY_TEXT with ``text`` (one or more ``"key": value`` pairs) added before the closing brace."""
    path = tmp_path / "c.json"
    path.write_text(STUDY_TEXT.rstrip().rstrip("}") + f",\n    {text}\n}}\n")
    return path


@pytest.mark.parametrize(
    "text,key",
    [
        ('"epochs": 100000', "epochs"),  # the study's "epochs": 7 is earlier in the file
        ('"lr": 0.1, "lr": 0.2', "lr"),
        ('"augment": {"rotate": 5, "rotate": 50}', "augment.rotate"),
    ],
)
def test_duplicate_keys_are_refused_naming_the_key(tmp_path: Path, text: str, key: str):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_json(_json_with(tmp_path, text))
    msg = str(e.value)
    assert "c.json" in msg and f"key {key!r}" in msg and "duplicate" in msg, msg


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN"])
@pytest.mark.parametrize(
    "key,template",
    [
        ("lr", '"lr": {}'),
        ("min_delta", '"min_delta": {}'),
        ("weight_decay", '"weight_decay": {}'),
        ("threshold", '"threshold": {}'),
        ("pixel_spacing_mm", '"pixel_spacing_mm": {}'),
        ("window_hu", '"window_hu": [0, {}]'),
        ("augment.rotate", '"augment": {{"rotate": {}}}'),
    ],
)
def test_non_finite_numbers_are_refused_by_key(tmp_path: Path, literal: str, key: str, template: str):
    text = template.format(literal)
    if key == "lr":  # replace the study's lr rather than duplicate it
        path = tmp_path / "c.json"
        path.write_text(STUDY_TEXT.replace('"lr"               : 1e-5', f'"lr": {literal}'))
    else:
        path = _json_with(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_json(path)
    msg = str(e.value)
    assert f"key {key!r}" in msg and "finite number" in msg, msg


@pytest.mark.parametrize("key", ["lr", "min_delta", "weight_decay", "threshold", "pixel_spacing_mm"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_values_from_code_or_set_are_refused(key: str, value: float):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({**STUDY, key: value})
    assert f"key {key!r}" in str(e.value) and "finite number" in str(e.value), str(e.value)
    with pytest.raises(ConfigError, match="rotate.*finite number"):
        TrainConfig.from_dict({**STUDY, "augment": {"rotate": value}})


def test_width_has_a_stated_maximum_and_threshold_is_strictly_inside_0_1():
    from liverseg.models import MAX_WIDTH

    assert TrainConfig.from_dict({**STUDY, "width": MAX_WIDTH}).model_width == MAX_WIDTH
    with pytest.raises(ConfigError, match=f"key 'width'.*<= {MAX_WIDTH}"):
        TrainConfig.from_dict({**STUDY, "width": 3000})
    with pytest.raises(ConfigError, match="key 'threshold'"):  # a checkpoint with threshold 0 would not load
        TrainConfig.from_dict({**STUDY, "threshold": 0})


def test_set_overrides_refuse_duplicates_and_non_finite_numbers():
    with pytest.raises(ConfigError, match="key 'lr'.*Infinity is not a finite number"):
        parse_override("lr=Infinity")
    with pytest.raises(ConfigError, match="key 'augment.rotate'.*duplicate"):
        parse_override('augment={"rotate": 1, "rotate": 2}')
    assert parse_override('augment={"rotate": 1}') == ("augment", {"rotate": 1})
