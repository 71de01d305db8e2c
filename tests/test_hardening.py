"""What hostile and careless use of ``liverseg-infer`` broke (the hardening issue), one test per finding.

The model is a width-4 U-Net with seeded random weights; inputs are made in ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_infer import _bomb_png, _checkpoint, _export, _png  # tests/ is on sys.path under pytest

from liverseg.core.data import DataError, read_image
from liverseg.infer.io import MODEL_MAX_PIXELS
from liverseg.infer.runner import Options, run_inference


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
    res, rows = _run(tmp_path / "big.png", model, tmp_path / "out")
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
