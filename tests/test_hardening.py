"""What hostile and careless use of ``liverseg-infer`` broke (the hardening issue), one test per finding.

The model is a width-4 U-Net with seeded random weights; inputs are made in ``tmp_path``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_infer import _bomb_png, _checkpoint, _export, _png  # tests/ is on sys.path under pytest

from liverseg.core.images import DataError, read_image
from liverseg.infer.runner import Options, run_inference
from liverseg.predict.predictor import MODEL_MAX_PIXELS


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _export(_checkpoint(), tmp_path_factory.mktemp("model") / "model.onnx")


def _run(source: Path, model: Path, out: Path, **kw: Any) -> tuple[Any, pd.DataFrame | None]:
    kw.setdefault("report", False)
    res = run_inference(Options(source=source, model=model, out=out, progress=False, **kw), log=lambda s: None)
    rows = None
    if res.out_dir is not None and (res.out_dir / "per_image.csv").exists():
        rows = pd.read_csv(res.out_dir / "per_image.csv", dtype=str, keep_default_na=False)
    return res, rows


# ---------------------------------------------------------------- 1. a tiny PNG that declares a huge image


def test_a_png_declaring_17000_squared_pixels_is_refused_from_its_header(tmp_path, recwarn):
    """289 M pixels: Pillow only warns there (it would decode 289 MB and the model would ask for 9 GB)."""
    bomb = _bomb_png(tmp_path / "bomb.png", side=17000)
    assert bomb.stat().st_size < 1000
    with pytest.raises(DataError, match=r"17000 x 17000 = 289 M pixels, over the limit of 67 M.*before decoding"):
        read_image(bomb)
    assert not [w for w in recwarn if "Decompression" in type(w.message).__name__]  # nothing printed by Pillow
    # the limit is an option: raised above the image's size, the header passes and decoding is what fails
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_image(bomb, max_pixels=300_000_000)


def test_the_bomb_fails_alone_and_the_batch_goes_on(tmp_path, model):
    folder = tmp_path / "in"
    _bomb_png(folder / "bomb.png", side=17000)
    _png(folder / "good.png", np.full((40, 40), 100, np.uint8))
    res, rows = _run(folder, model, tmp_path / "out")
    assert res.exit_code == 1 and rows is not None
    by_name = {Path(r["input"]).name: r for _, r in rows.iterrows()}
    assert by_name["good.png"]["status"] == "ok"
    assert "before decoding" in by_name["bomb.png"]["error"]


def test_a_slice_over_the_model_limit_runs_downscaled_and_says_so(tmp_path, model):
    side = int(MODEL_MAX_PIXELS**0.5) + 64  # just over the limit: the model sees at most MODEL_MAX_PIXELS
    img = np.zeros((side, side), np.uint8)
    img[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = 120
    _png(tmp_path / "big.png", img)
    res, rows = _run(tmp_path / "big.png", model, tmp_path / "out", allow_non_ct=True)  # two values: mask-like
    assert res.exit_code == 0 and rows is not None
    row = rows.iloc[0]
    assert (int(row["height"]), int(row["width"])) == (side, side)
    assert "larger than the model takes in one call" in row["notes"] and "resized back" in row["notes"]
    mask = np.asarray(Image.open(res.out_dir / row["output"]))
    assert mask.shape == (side, side) and set(np.unique(mask)) <= {0, 255}


# ---------------------------------------------------------------- 12. smaller ones


def test_multipage_tiff_uses_the_first_page_and_says_so(tmp_path, model):
    pages = [Image.fromarray(np.full((32, 32), v, np.uint8)) for v in (10, 200)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    notes: list[str] = []
    assert int(read_image(tmp_path / "stack.tif", notes=notes)[0, 0]) == 10
    assert notes and "2 pages: only the first was read" in notes[0]
    res, rows = _run(tmp_path / "stack.tif", model, tmp_path / "out")
    assert res.exit_code == 0 and rows is not None and "2 pages" in rows.iloc[0]["notes"]


def test_permission_denied_is_said_not_called_corrupt(tmp_path, monkeypatch):
    """Root reads every file, so the refusal of the OS is simulated where Pillow opens the file."""
    path = _png(tmp_path / "locked.png", np.zeros((8, 8), np.uint8))

    def denied(*a: Any, **k: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(DataError, match="permission denied") as e:
        read_image(path)
    assert "corrupt" not in str(e.value)


# ---------------------------------------------------------------- 2. a lock on the run folder


def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_holder(tmp_path, model):
    from liverseg.infer.resume import RunLock

    _png(tmp_path / "in" / "a.png", np.full((32, 32), 90, np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    holder = RunLock(out, "liverseg-infer first --out out")  # as if another run held the folder
    try:
        res, _ = _run(tmp_path / "in", model, out, resume=True)
        assert res.exit_code == 2 and re.search(
            r"in use by another liverseg-infer run \(process \d+ on .*first", res.message
        )
        assert not (out / "per_image.csv").exists()  # nothing was touched
    finally:
        holder.release()
    res, _ = _run(tmp_path / "in", model, out, resume=True)  # released (or its process killed): it goes on
    assert res.exit_code == 0


def test_a_lock_left_by_a_killed_run_does_not_block_resume(tmp_path, model):
    import subprocess
    import sys

    _png(tmp_path / "in" / "a.png", np.full((32, 32), 90, np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import os; from pathlib import Path; from liverseg.infer.resume import RunLock; "
        f"RunLock(Path({str(out)!r}), 'x'); os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert (out / ".liverseg-run.lock").read_text().strip()  # the file stays, the lock went with the process
    res, _ = _run(tmp_path / "in", model, out, resume=True)
    assert res.exit_code == 0


# ---------------------------------------------------------------- 3. --out inside the input folder


def test_out_inside_the_input_folder_is_never_read_back_as_input(tmp_path, model):
    src = tmp_path / "data"
    for i in range(3):
        _png(src / f"{i:03d}.png", np.full((32, 32), 60 + i, np.uint8))
    out = src / "predictions"
    res, rows = _run(src, model, out)
    assert res.exit_code == 0 and rows is not None and len(rows) == 3
    res2, rows2 = _run(src, model, out, resume=True)  # same list: resumable, no *_pred_pred.png
    assert res2.exit_code == 0 and rows2 is not None and len(rows2) == 3
    assert res2.summary["n_resumed"] == 3
    # a later run elsewhere does not take the earlier run's masks as inputs either
    res3, rows3 = _run(src, model, tmp_path / "elsewhere")
    assert rows3 is not None and sorted(Path(p).name for p in rows3["input"]) == ["000.png", "001.png", "002.png"]
    assert not [p for p in (tmp_path / "elsewhere" / "masks").iterdir() if "_pred_pred" in p.name]


@pytest.mark.parametrize("where", ["dataset", "masks", "source"])
def test_out_that_would_write_into_the_data_is_refused(tmp_path, model, where):
    ds = tmp_path / "ds"
    _png(ds / "images" / "001.png", np.full((32, 32), 60, np.uint8))
    _png(ds / "masks" / "001.png", np.zeros((32, 32), np.uint8))
    src = ds if where != "source" else ds / "images"
    out = {"dataset": ds, "masks": ds / "masks", "source": ds / "images"}[where]
    before = sorted(p.relative_to(ds) for p in ds.rglob("*"))
    res, _ = _run(src, model, out)
    assert res.exit_code == 2 and re.search(
        r"--out .*(holds the run's (labels|inputs)|is the input folder)", res.message
    )
    assert sorted(p.relative_to(ds) for p in ds.rglob("*")) == before


# ---------------------------------------------------------------- 8. --resume sees a replaced input


def test_resume_redoes_an_input_replaced_in_place(tmp_path, model):
    src = tmp_path / "in"
    _png(src / "a.png", np.full((32, 32), 90, np.uint8))
    _png(src / "b.png", np.full((32, 32), 90, np.uint8))
    out = tmp_path / "out"
    res, _ = _run(src, model, out)
    assert res.exit_code == 0
    _png(src / "a.png", np.full((64, 48), 90, np.uint8))  # a new, bigger slice under the old name
    res, rows = _run(src, model, out, resume=True)
    assert res.exit_code == 0 and res.summary["n_resumed"] == 1 and rows is not None
    a = rows[rows["input"].str.endswith("a.png")].iloc[0]
    assert (int(a["height"]), int(a["width"])) == (64, 48)
    assert np.asarray(Image.open(out / a["output"])).shape == (64, 48)


# ---------------------------------------------------------------- 9. entries that are not regular files


def test_entries_that_are_not_regular_files_are_reported(tmp_path, model):
    import os

    src = tmp_path / "in"
    _png(src / "good.png", np.full((32, 32), 90, np.uint8))
    (src / "broken.png").symlink_to(src / "nowhere.png")
    (src / "loop.png").symlink_to(src / "loop.png")
    os.mkfifo(src / "pipe.png")
    (src / "folder.png").mkdir()
    _png(src / "orphan_mask.png", np.zeros((32, 32), np.uint8))
    res, rows = _run(src, model, tmp_path / "out")
    assert res.exit_code == 1 and rows is not None
    errors = {Path(r["input"]).name: r["error"] for _, r in rows.iterrows()}
    assert errors["good.png"] == ""
    assert "broken symbolic link" in errors["broken.png"]
    assert "symbolic link loop" in errors["loop.png"]
    assert "FIFO" in errors["pipe.png"]
    assert "is a folder" in errors["folder.png"]
    ignored = res.summary["inputs"]["ignored_examples"]
    assert any("orphan_mask.png" in e and "a mask with no image orphan.*" in e for e in ignored), ignored


# ---------------------------------------------------------------- 4. a full disk


def test_a_full_disk_stops_with_its_own_code_keeps_the_work_and_resumes(tmp_path, model, monkeypatch):
    import json

    import liverseg.infer.rows as rows_mod
    from liverseg.core.files import DiskFullError, write_bytes_atomic

    src = tmp_path / "in"
    for i in range(6):
        _png(src / f"{i:03d}.png", np.full((32, 32), 80 + i, np.uint8))
    out = tmp_path / "out"
    calls = {"n": 0}

    def filling(path: Any, data: bytes, **kw: Any) -> int:
        calls["n"] += 1
        if calls["n"] > 3:  # room for three masks
            raise DiskFullError(f"{path}: disk full while writing (No space left on device)")
        return write_bytes_atomic(path, data, **kw)

    monkeypatch.setattr(rows_mod, "write_bytes_atomic", filling)
    res, _ = _run(src, model, out, batch_size=1)
    assert res.exit_code == 3 and "no space left" in res.message and "--resume --out" in res.message
    rows = pd.read_csv(out / "per_image.csv", dtype=str, keep_default_na=False)
    assert (rows["status"] == "ok").sum() == 3  # the completed part, in per_image.csv
    assert set(rows.loc[rows["status"] != "ok", "status"]) == {"skipped"}  # not blamed on the inputs
    assert "disk full" in json.loads((out / "summary.json").read_text())["stopped"]
    monkeypatch.setattr(rows_mod, "write_bytes_atomic", write_bytes_atomic)  # space freed
    res, _ = _run(src, model, out, resume=True)
    assert res.exit_code == 0 and res.summary["n_resumed"] == 3 and res.summary["n_ok"] == 6


# ---------------------------------------------------------------- 5-7. doctored contracts and models


def _contract_of(model: Path) -> dict[str, Any]:
    import json

    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    return json.loads(meta["liverseg.contract"])


def _with_contract(model: Path, out: Path, contract_json: str) -> Path:
    import onnx

    m = onnx.load(str(model))
    for p in m.metadata_props:
        if p.key == "liverseg.contract":
            p.value = contract_json
    onnx.save(m, str(out))
    return out


def _doctored(tmp_path: Path, model: Path, kind: str) -> Path:
    """A model with the contract of ``model`` whose mask output breaks it (``kind``)."""
    import json

    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 1, "H", "W"])
    prob = helper.make_tensor_value_info("probability", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["scale"], value=helper.make_tensor("s", TensorProto.FLOAT, [], [1 / 255])),
        helper.make_node("Mul", ["xf", "scale"], ["probability"]),
    ]
    if kind == "half_size":
        nodes += [
            helper.make_node("MaxPool", ["probability"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Cast", ["pooled"], ["mask"], to=TensorProto.UINT8),
        ]
        mask = helper.make_tensor_value_info("mask", TensorProto.UINT8, None)
    elif kind == "not_binary":
        nodes.append(helper.make_node("Identity", ["image"], ["mask"]))
        mask = helper.make_tensor_value_info("mask", TensorProto.UINT8, None)
    else:  # float
        nodes.append(helper.make_node("Identity", ["probability"], ["mask"]))
        mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "doctored", [x], [prob, mask])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    helper.set_model_props(m, {"liverseg.contract": json.dumps(_contract_of(model))})
    path = tmp_path / f"{kind}.onnx"
    onnx.save(m, str(path))
    return path


def _folder(tmp_path: Path, n: int = 4) -> Path:
    for i in range(n):
        _png(tmp_path / "in" / f"{i:03d}.png", np.full((32, 32), 30 + 60 * (i % 3), np.uint8))
    return tmp_path / "in"


@pytest.mark.parametrize(
    "change, word",
    [
        ({"threshold": "abc"}, "'threshold' must be a number in (0, 1)"),
        ({"threshold": None}, "'threshold' must be a number in (0, 1)"),
        ({"threshold": 7.5}, "'threshold' must be a number in (0, 1)"),
        ({"outputs": "nope"}, "'outputs' must be a list"),
        ({"ct": {"window_hu": [255, 0]}}, "high > low"),
        ("nested", "nested too deeply"),
    ],
)
def test_a_bad_contract_stops_the_run_before_any_input(tmp_path, model, change, word):
    import json

    if change == "nested":
        text = "[" * 100_000 + "]" * 100_000
    else:
        text = json.dumps({**_contract_of(model), **change})
    bad = _with_contract(model, tmp_path / "bad.onnx", text)
    res, _ = _run(_folder(tmp_path), bad, tmp_path / "out")
    assert res.exit_code == 2 and word in res.message, res.message
    assert not (tmp_path / "out").exists()  # refused before the run folder was made


@pytest.mark.parametrize(
    "kind, word", [("half_size", "for an input of"), ("not_binary", "the contract says 0/1"), ("float", "float32")]
)
def test_a_model_whose_outputs_break_the_contract_stops_with_one_usage_error(tmp_path, model, kind, word):
    res, _ = _run(_folder(tmp_path), _doctored(tmp_path, model, kind), tmp_path / "out")
    assert res.exit_code == 2 and word in res.message and "'mask'" in res.message, res.message
    assert not list((tmp_path / "out" / "masks").glob("*.png"))  # no wrong mask was written


def test_the_threshold_of_contract_is_applied(tmp_path, model):
    """The random-weight model's probabilities lie near 0.59: at 0.591 its own mask (0.5) and the contract's differ."""
    import json

    src = _folder(tmp_path)
    contract = tmp_path / "c.json"
    contract.write_text(json.dumps({**_contract_of(model), "threshold": 0.591}))
    res, rows = _run(src, model, tmp_path / "a", contract=contract, save_probabilities=True)
    assert res.exit_code == 0 and rows is not None and res.summary["model"]["contract"]["threshold"] == 0.591
    split = False
    for _, r in rows.iterrows():
        prob = np.asarray(Image.open(res.out_dir / f"probabilities/{Path(r['input']).stem}_prob.png")) / 65535.0
        mask = np.asarray(Image.open(res.out_dir / r["output"])) > 0
        clear = np.abs(prob - 0.591) > 1e-4  # away from the threshold by more than the 16-bit rounding
        assert np.array_equal(mask[clear], (prob > 0.591)[clear])
        split = split or 0 < mask.mean() < 1
    assert split  # the model's own 0.5 mask would be all liver here


def test_a_model_failing_on_one_input_prints_no_onnxruntime_log_line(tmp_path, model):
    """The failure is the input's row; onnxruntime's coloured '[E:onnxruntime...' line no longer reaches stderr."""
    import json
    import subprocess
    import sys

    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node(
            "Constant", [], ["shape"], value=helper.make_tensor("s", TensorProto.INT64, [4], [1, 1, 32, 32])
        ),
        helper.make_node("Reshape", ["xf", "shape"], ["r"]),  # fails for any other size
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.FLOAT, [], [0.0])),
        helper.make_node("Mul", ["r", "zero"], ["probability"]),
        helper.make_node("Cast", ["probability"], ["mask"], to=TensorProto.UINT8),
    ]
    outs = [
        helper.make_tensor_value_info("probability", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("mask", TensorProto.UINT8, None),
    ]
    x = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 1, "H", "W"])
    m = helper.make_model(
        helper.make_graph(nodes, "g", [x], outs), opset_imports=[helper.make_opsetid("", 18)], ir_version=9
    )
    helper.set_model_props(m, {"liverseg.contract": json.dumps(_contract_of(model))})
    onnx.save(m, str(tmp_path / "fixed32.onnx"))
    _png(tmp_path / "in" / "a.png", np.zeros((32, 32), np.uint8))
    _png(tmp_path / "in" / "b.png", np.zeros((48, 48), np.uint8))
    cmd = [sys.executable, "-c", "from liverseg.infer.cli import main; main()", str(tmp_path / "in")]
    cmd += ["--model", str(tmp_path / "fixed32.onnx"), "--out", str(tmp_path / "out"), "--device", "cpu", "--no-report"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "\x1b[" not in proc.stderr and "[E:onnxruntime" not in proc.stderr, proc.stderr
    rows = pd.read_csv(tmp_path / "out" / "per_image.csv", dtype=str, keep_default_na=False)
    assert "model failed" in rows.loc[rows["input"].str.endswith("b.png"), "error"].iloc[0]
