"""Shared fixtures. Real data lives in ../shared/data beside the checkout.

Tests that need it use the ``shared_data`` fixture: it skips with a reason when the
folder is absent (a user's fresh clone) and fails instead when
LIVERSEG_REQUIRE_DATA=1 (set by .ci/run), so CI can never pass by skipping.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LIVERSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))
# The original study's artefacts (its state-dict layouts, fixture.npz, result CSVs): ../shared/seed/README.md
SHARED_SEED = Path(os.environ.get("LIVERSEG_SHARED_SEED", ROOT.parent / "shared" / "seed"))


def _require(path: Path) -> Path:
    if not path.exists():
        msg = f"real data not found at {path} (../shared/data beside the checkout)"
        if os.environ.get("LIVERSEG_REQUIRE_DATA") == "1":
            pytest.fail(msg + "; LIVERSEG_REQUIRE_DATA=1 makes this a failure")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def seed_format(shared_data) -> Path:
    return _require(shared_data / "seed-format")


@pytest.fixture(scope="session")
def msd_dir(shared_data) -> Path:
    return _require(shared_data / "msd-liver-256")


@pytest.fixture(scope="session")
def chaos_dir(shared_data) -> Path:
    return _require(shared_data / "chaos-ct-case")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if ("cuda" in item.keywords or "gpu" in item.keywords) and not has_cuda:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lits_dir(shared_data) -> Path:
    return _require(shared_data / "lits-117")


@pytest.fixture(scope="session")
def study_seed() -> Path:
    """../shared/seed: the study's state-dict layouts, fixture.npz and results/."""
    return _require(SHARED_SEED / "fixture.npz").parent


def recipe_state_dict(seed_dir: Path, model: str) -> OrderedDict[str, torch.Tensor]:
    """The study-format state dict of ``model`` with the weights of the seed README's recipe."""
    layout = json.loads((seed_dir / f"{model}_state_dict.json").read_text())
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, (key, shape, dtype) in enumerate(layout):
        rng = np.random.default_rng(1000 + i)
        shape = tuple(shape)
        leaf = key.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            sd[key] = torch.tensor(10, dtype=torch.int64)
            continue
        if leaf == "running_var":
            a = 0.5 + rng.random(shape)
        elif leaf == "running_mean":
            a = 0.1 * rng.standard_normal(shape)
        elif leaf == "weight" and len(shape) == 4:
            a = rng.standard_normal(shape) * np.sqrt(2 / (shape[1] * shape[2] * shape[3]))
        elif leaf == "weight":
            a = 1 + 0.1 * rng.standard_normal(shape)
        elif leaf == "bias":
            a = 0.05 * rng.standard_normal(shape)
        else:
            raise AssertionError(f"the recipe does not cover {key}")
        assert dtype == "float32", key
        sd[key] = torch.from_numpy(np.asarray(a, dtype=np.float32))
    return sd


@pytest.fixture(scope="session")
def study_pth(study_seed, tmp_path_factory) -> Callable[[str], Path]:
    """``study_pth("unet")``: a study ``trained_model.pth`` (a plain state dict) of recipe weights."""
    made: dict[str, Path] = {}

    def make(model: str) -> Path:
        if model not in made:
            path = tmp_path_factory.mktemp(f"study-{model}") / "trained_model.pth"
            torch.save(recipe_state_dict(study_seed, model), path)
            made[model] = path
        return made[model]

    return make


def record_keyword(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, keyword: str, default: Any = None
) -> list:
    """Wrap ``owner.name`` so each call records its ``keyword`` argument (``default`` when absent), then runs it."""
    seen: list = []
    real = getattr(owner, name)

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get(keyword, default))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return seen


@pytest.fixture(scope="session")
def shipped():
    """The shipped reference model, loaded once for the tests that run it on real scans."""
    from liverseg.api import Segmenter

    with Segmenter() as seg:
        yield seg


class StubSession:
    """A model session for the predictor's tests: ``model(batch) -> (mask, probability)`` at ``threshold``."""

    path = Path("stub.onnx")

    def __init__(self, model: Callable[[np.ndarray], Any], threshold: float = 0.5) -> None:
        self.model, self.threshold = model, threshold

    def run(self, batch: np.ndarray, probability: bool = False) -> Any:
        return self.model(batch)


def stub_predictor(model: Callable[[np.ndarray], Any], batch_size: int = 1, **kw: Any) -> Any:
    """A :class:`liverseg.predict.predictor.Predictor` over ``model`` (no second look unless asked)."""
    from liverseg.predict.predictor import Predictor, Prep

    kw.setdefault("second_look", False)
    return Predictor(StubSession(model), kw.pop("prep", Prep()), batch_size, **kw)  # type: ignore[arg-type]
