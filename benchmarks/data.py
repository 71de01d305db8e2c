"""Benchmark inputs: real CT slices with expert masks when ../shared/data is there, else synthetic.

* Timing and parity slices: the CHAOS CT case (78 contiguous 512x512 slices, a
  different scanner than the LiTS data the models train on). Slices are taken
  evenly over the liver-bearing range so a small set still spans the organ.
* int8 calibration images: slices of ``msd-liver-256`` (LiTS patients, the training
  distribution), never the slices the Dice change is measured on.
* Other sizes: images are resized bilinearly, masks by nearest neighbour.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("LIVERSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))


@dataclass
class SliceSet:
    """Gray slices (uint8 [H, W]) with optional liver masks (bool [H, W]) and where they came from."""

    images: list[np.ndarray]
    masks: list[np.ndarray | None]
    source: str

    def __len__(self) -> int:
        return len(self.images)

    def resized(self, size: int) -> SliceSet:
        from PIL import Image

        out_i, out_m = [], []
        for img, m in zip(self.images, self.masks):
            if img.shape != (size, size):
                img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
                if m is not None:
                    m = (
                        np.asarray(
                            Image.fromarray(m.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
                        )
                        > 127
                    )
            out_i.append(img)
            out_m.append(m)
        return SliceSet(
            out_i,
            out_m,
            f"{self.source} resized to {size}x{size}"
            if self.images and self.images[0].shape != (size, size)
            else self.source,
        )

    def batch(self, start: int, n: int) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """``n`` slices from ``start`` (cycling) as uint8 [n, 1, H, W], and their masks."""
        idx = [(start + i) % len(self.images) for i in range(n)]
        x = np.stack([self.images[i] for i in idx])[:, None]
        return np.ascontiguousarray(x), [self.masks[i] for i in idx]


def _evenly(items: list, n: int) -> list:
    if n >= len(items):
        return list(items)
    pos = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in pos]


def real_slices(n: int, data_dir: Path | None = None) -> SliceSet | None:
    """``n`` CHAOS slices that contain liver (evenly spaced), or None when the data is absent."""
    from liverseg.core.images import discover, read_pair

    folder = (data_dir or shared_data_dir()) / "chaos-ct-case"
    if not (folder / "images").is_dir():
        return None
    samples = [s for s in discover(folder) if s.mask is not None]
    pairs = [read_pair(s) for s in samples]
    with_liver = [(img, m.astype(bool)) for img, m in pairs if np.any(m)]
    chosen = _evenly(with_liver, n)
    return SliceSet(
        [c[0] for c in chosen],
        [c[1] for c in chosen],
        f"{folder} ({len(chosen)} of {len(pairs)} slices, liver present)",
    )


def calibration_slices(n: int, data_dir: Path | None = None) -> tuple[list[np.ndarray], str]:
    """``n`` uint8 slices for int8 calibration: msd-liver-256 when present, else synthetic."""
    from liverseg.core.images import read_image

    folder = (data_dir or shared_data_dir()) / "msd-liver-256" / "images"
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
        if files:
            chosen = _evenly(files, n)
            return [read_image(p) for p in chosen], f"{folder} ({len(chosen)} slices)"
    s = synthetic_slices(n, 256, seed=1)
    return s.images, s.source


def synthetic_slices(n: int, size: int, seed: int = 0) -> SliceSet:
    """Synthetic CT-like slices with masks (liverseg.apps.synthetic), for machines without the data."""
    from liverseg.apps.synthetic import make_slice

    rng = np.random.default_rng(seed)
    pairs = [make_slice(rng, (size, size), p_empty=0.0) for _ in range(n)]
    return SliceSet(
        [p[0] for p in pairs],
        [p[1].astype(bool) for p in pairs],
        f"synthetic ({n} slices, liverseg.apps.synthetic seed {seed})",
    )


def slices(n: int, size: int, data_dir: Path | None = None, real: bool = True) -> SliceSet:
    """Real slices resized to ``size`` when available, else synthetic ones of that size."""
    s = real_slices(n, data_dir) if real else None
    return s.resized(size) if s is not None and len(s) else synthetic_slices(n, size)
