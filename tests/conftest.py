"""Shared fixtures. Real data lives in ../shared/data beside the checkout.

Tests that need it use the ``shared_data`` fixture: it skips with a reason when the
folder is absent (a user's fresh clone) and fails instead when
LIVERSEG_REQUIRE_DATA=1 (set by .ci/run), so CI can never pass by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LIVERSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))


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
