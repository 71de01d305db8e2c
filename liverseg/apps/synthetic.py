"""Synthetic CT-like axial slices with liver masks, deterministic from a seed.

The pictures imitate the study's PNG slices: CT numbers clipped to [0, 255]
(HU 0..255 -> gray 0..255), radiological view (anterior at the top, the patient's
right -- and so the liver -- on the image's left). A slice is composed in HU-like
floats and clipped at the end, so air (-1000) and fat (-100) come out black:

* body: a rounded (super-)ellipse; skin, subcutaneous fat, a muscle wall (~50);
* spine (vertebral body with bright cortex, canal, posterior elements), paraspinal
  muscles, rib fragments (bright arcs inside the wall);
* liver (~100-140): a union of a few ellipses, smoothly warped, with texture,
  vessels and sometimes darker lesions (lesions and vessels count as liver, as in
  LiTS); gallbladder, IVC and right kidney cut into it and do not;
* distractors: spleen on the other side and IVC close to the liver's gray level,
  kidneys, aorta, stomach with gas, bowel loops (some contrast-filled);
* Gaussian blur (scanner PSF) and Gaussian noise.

:func:`make_slice` draws one slice (of a random or given :class:`Patient` at a
given height ``z`` in 0..1, lower abdomen to the liver dome). Low ``z`` slices lie
below the liver's tip and have an empty mask. :func:`write_dataset` writes
consecutive slices of a few patients in the study's layout, with a manifest whose
``patient`` column allows a split by patient.

Everything is vectorised numpy; a 128x128 slice takes a few milliseconds.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from liverseg.core.errors import UsageError
from liverseg.core.files import write_text_atomic

LAYOUTS = ("study", "folders", "flat")

AIR, FAT, MUSCLE, CSF = -1000.0, -100.0, 50.0, 15.0


# ---------------------------------------------------------------- patient


@dataclass(frozen=True)
class Patient:
    """Anatomy and scanner settings shared by all slices of one synthetic patient.

    Lengths are in normalised units: 1.0 = half the shorter image side.
    """

    body_center: tuple[float, float]  # (x, y)
    body_axes: tuple[float, float]  # semi-axes (x, y)
    body_power: float  # super-ellipse exponent (2 = ellipse, larger = boxier)
    fat: float  # subcutaneous fat thickness
    wall: float  # muscle wall thickness
    liver_hu: float  # mean gray level of the liver
    liver_texture: float  # std of the liver's smooth texture
    liver_lobes: tuple[tuple[float, float, float, float, float], ...]  # (dx, dy, ax, ay, angle) per lobe
    liver_warp: tuple[float, ...]  # amplitudes and phases of the smooth deformation
    liver_range: tuple[float, float, float]  # z of the tip, z of the widest slice, size at the dome
    lesions: tuple[tuple[float, float, float, float], ...]  # (dx, dy, radius, contrast), relative to the liver
    spleen_hu: float
    kidney_hu: float
    aorta_hu: float
    ivc_hu: float
    bowel: tuple[tuple[float, float, float, float, float], ...]  # (x, y, radius, hu, z-phase)
    rib_phase: float
    noise: float  # Gaussian noise std (HU)
    blur: float  # PSF sigma in pixels at 128x128 (scaled with the image)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Patient:
        u = rng.uniform
        ax, ay = u(0.78, 0.92), u(0.56, 0.70)
        n_lobes = int(rng.integers(2, 5))
        lobes = [(u(-0.05, 0.05), u(-0.05, 0.08), u(0.26, 0.34), u(0.32, 0.42), u(-0.4, 0.1))]  # right lobe
        lobes.append((u(0.18, 0.32), u(-0.22, -0.12), u(0.20, 0.30), u(0.12, 0.18), u(-0.35, 0.05)))  # medial/left lobe
        for _ in range(n_lobes - 2):
            lobes.append((u(-0.1, 0.2), u(-0.15, 0.15), u(0.12, 0.22), u(0.10, 0.2), u(-1.5, 1.5)))
        n_les = int(rng.choice([0, 0, 0, 1, 2, 3]))
        lesions = tuple((u(-0.2, 0.25), u(-0.25, 0.2), u(0.025, 0.08), u(-55, -25)) for _ in range(n_les))
        n_bowel = int(rng.integers(4, 9))
        bowel = tuple(
            (
                u(-0.45, 0.55),
                u(-0.45, 0.15),
                u(0.05, 0.11),
                float(rng.choice([u(20, 60), u(20, 60), u(160, 300)])),
                u(0, 2 * np.pi),
            )
            for _ in range(n_bowel)
        )
        tip = u(0.05, 0.3)
        liver_hu = u(100, 135)
        return cls(
            body_center=(u(-0.06, 0.06), u(-0.05, 0.07)),
            body_axes=(ax, ay),
            body_power=u(2.1, 2.8),
            fat=u(0.02, 0.09),
            wall=u(0.025, 0.045),
            liver_hu=liver_hu,
            liver_texture=u(2.5, 6.0),
            liver_lobes=tuple(lobes),
            liver_warp=tuple(
                np.concatenate(
                    [rng.uniform(0.01, 0.05, 4), rng.uniform(0, 2 * np.pi, 4), rng.uniform(2, 5, 4)]
                ).tolist()
            ),
            liver_range=(tip, u(max(tip + 0.2, 0.55), 0.8), u(0.3, 0.6)),
            lesions=lesions,
            spleen_hu=liver_hu + u(-20, 8),
            kidney_hu=u(110, 170),
            aorta_hu=u(140, 260),
            ivc_hu=liver_hu + u(-15, 25),
            bowel=bowel,
            rib_phase=u(-0.15, 0.15),
            noise=u(4.0, 10.0),
            blur=u(0.4, 0.9),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- drawing helpers

Window = tuple[slice, slice]
FULL: Window = (slice(None), slice(None))


class _Canvas:
    """An HU image and the liver's visible share per pixel.

    Shapes are signed distances (normalised units, < 0 inside) evaluated on a
    window (a bounding box) of the image, so small organs cost little.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        h, w = size
        self.h, self.w = h, w
        self.scale = min(h, w) / 2.0  # pixels per normalised unit
        self.x = ((np.arange(w, dtype=np.float32) + 0.5) - w / 2.0) / self.scale
        self.y = ((np.arange(h, dtype=np.float32) + 0.5) - h / 2.0) / self.scale
        self.X, self.Y = np.meshgrid(self.x, self.y)
        self.hu = np.full((h, w), AIR, dtype=np.float32)
        self.liver = np.zeros((h, w), dtype=np.float32)

    def alpha(self, d: np.ndarray) -> np.ndarray:
        """Coverage from a signed distance: a soft edge one pixel wide."""
        return np.clip(0.5 - d * self.scale, 0.0, 1.0)

    def window(self, cx: float, cy: float, ex: float, ey: float) -> Window | None:
        """Pixel window holding the box centre +- (ex, ey), with a 2-pixel margin; None when off the image."""
        s = self.scale
        j0 = max(int(np.floor((cx - ex) * s + self.w / 2.0)) - 2, 0)
        j1 = min(int(np.ceil((cx + ex) * s + self.w / 2.0)) + 2, self.w)
        i0 = max(int(np.floor((cy - ey) * s + self.h / 2.0)) - 2, 0)
        i1 = min(int(np.ceil((cy + ey) * s + self.h / 2.0)) + 2, self.h)
        if j0 >= j1 or i0 >= i1:
            return None
        return (slice(i0, i1), slice(j0, j1))

    def paint(
        self,
        d: np.ndarray,
        value: float | np.ndarray,
        win: Window = FULL,
        liver: bool = False,
        where: np.ndarray | None = None,
    ) -> None:
        """Composite a shape (distance ``d`` on window ``win``); non-liver shapes hide the liver below."""
        a = self.alpha(d)
        if where is not None:
            a = a * where
        if isinstance(value, np.ndarray) and value.shape == self.hu.shape:
            value = value[win]
        hu = self.hu[win]
        hu += a * (value - hu)
        lv = self.liver[win]
        if liver:
            lv += a * (1.0 - lv)
        else:
            lv *= 1.0 - a

    def ellipse(
        self, cx: float, cy: float, ax: float, ay: float, angle: float = 0.0, win: Window | None = None
    ) -> tuple[np.ndarray, Window] | None:
        """(approximate signed distance to an ellipse on its window, window); None when off the image."""
        c, s = float(np.cos(angle)), float(np.sin(angle))
        if win is None:
            win = self.window(cx, cy, float(np.hypot(ax * c, ay * s)), float(np.hypot(ax * s, ay * c)))
            if win is None:
                return None
        dx = self.x[win[1]][None, :] - cx
        dy = self.y[win[0]][:, None] - cy
        u = (c * dx + s * dy) * (1.0 / ax)
        v = (c * dy - s * dx) * (1.0 / ay)
        return (np.sqrt(u * u + v * v) - 1.0) * min(ax, ay), win

    def paint_ellipse(
        self,
        cx: float,
        cy: float,
        ax: float,
        ay: float,
        angle: float,
        value: float | np.ndarray,
        liver: bool = False,
        inside: np.ndarray | None = None,
        keep_liver: bool = False,
    ) -> None:
        """Paint an ellipse; ``inside`` (a full-image distance) clips it to another shape;
        ``keep_liver`` paints only beside the liver, never over it."""
        e = self.ellipse(cx, cy, ax, ay, angle)
        if e is None:
            return
        d, win = e
        if inside is not None:
            d = np.maximum(d, inside[win])
        self.paint(d, value, win, liver=liver, where=(1.0 - self.liver[win]) if keep_liver else None)


def _gaussian_blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur (edge values repeated), kernel radius 3 sigma."""
    if sigma_px <= 0:
        return img
    r = max(1, int(np.ceil(3.0 * sigma_px)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float32) / sigma_px) ** 2)
    k /= k.sum()
    h, w = img.shape
    p = np.concatenate([np.repeat(img[:1], r, 0), img, np.repeat(img[-1:], r, 0)], axis=0)
    tmp = k[0] * p[0:h]
    for i in range(1, 2 * r + 1):
        tmp += k[i] * p[i : i + h]
    p = np.concatenate([np.repeat(tmp[:, :1], r, 1), tmp, np.repeat(tmp[:, -1:], r, 1)], axis=1)
    out = k[0] * p[:, 0:w]
    for i in range(1, 2 * r + 1):
        out += k[i] * p[:, i : i + w]
    return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """Smooth random field of about unit std: Gaussian values on a grid of
    ``cell_px``-pixel cells, interpolated with smoothstep weights (value noise)."""
    h, w = shape
    cell = max(float(cell_px), 1.0)
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    fy = (np.arange(h, dtype=np.float32) + 0.5) / cell
    fx = (np.arange(w, dtype=np.float32) + 0.5) / cell
    iy, ix = fy.astype(np.int64), fx.astype(np.int64)
    ty, tx = fy - iy, fx - ix
    ty, tx = ty * ty * (3 - 2 * ty), tx * tx * (3 - 2 * tx)
    rows = g[:, ix] + tx * (g[:, ix + 1] - g[:, ix])  # [gh, w]: along x on the coarse rows
    out = rows[iy] + ty[:, None] * (rows[iy + 1] - rows[iy])  # [h, w]: then along y
    # the interpolation shrinks the variance; 1.37 restores about unit std
    return 1.37 * out


def _liver_size(p: Patient, z: float) -> float:
    """Cross-section scale of the liver at height z (0 below its tip)."""
    tip, widest, dome = p.liver_range
    if z <= tip:
        return 0.0
    if z <= widest:
        return float(np.sqrt((z - tip) / (widest - tip)))
    return float(1.0 - (1.0 - dome) * ((z - widest) / max(1.0 - widest, 1e-6)) ** 2)


# ---------------------------------------------------------------- one slice
#
# make_slice paints back to front: body wall and cavity, spine and ribs, the liver,
# then the organs that cut into it or lie beside it, then the scanner. Each painter
# draws its random numbers in a fixed order, so one seed always gives one slice.


@dataclass(frozen=True)
class _Body:
    """Where the body lies in this slice, and the distances the organs inside it are clipped to."""

    x: float  # centre
    y: float
    ax: float  # semi-axes at this height
    ay: float
    inner: float  # depth of skin and fat: where the muscle wall begins
    d_body: np.ndarray  # signed distance to the skin (full image)
    d_cav: np.ndarray  # signed distance to the abdominal cavity inside the wall (full image)

    @property
    def spine(self) -> tuple[float, float]:
        """Centre of the vertebral body."""
        return self.x, self.y + self.ay - self.inner - 0.24


def _draw_height(rng: np.random.Generator, patient: Patient, p_empty: float) -> float:
    """A slice height: below the liver's tip with probability ``p_empty``, else above it."""
    tip = patient.liver_range[0]
    return float(rng.uniform(0.0, tip)) if rng.uniform() < p_empty else float(rng.uniform(tip + 0.02, 1.0))


def _paint_body(cv: _Canvas, rng: np.random.Generator, p: Patient, z: float) -> _Body:
    """Skin, subcutaneous fat, muscle wall and the cavity's fat, mesentery and collapsed bowel."""
    u = rng.uniform
    # breathing / positioning jitter from slice to slice
    bx, by = p.body_center[0] + u(-0.01, 0.01), p.body_center[1] + u(-0.01, 0.01)
    ax, ay = p.body_axes[0] * (1 - 0.04 * z), p.body_axes[1] * (1 - 0.03 * z)
    # super-ellipse distance (approximate, scaled by the shorter axis), flatter at the back
    qx = np.abs(cv.X - bx) * (1.0 / ax)
    qy = np.abs(cv.Y - by) * (1.0 / ay)
    qy = np.where(cv.Y > by, qy * 1.04, qy)
    d_body = ((qx**p.body_power + qy**p.body_power) ** (1.0 / p.body_power) - 1.0) * min(ax, ay)
    inner = p.fat + 0.012
    cv.paint(d_body, MUSCLE - 10)  # skin
    cv.paint(d_body + 0.012, FAT)  # subcutaneous fat
    cv.paint(d_body + inner, MUSCLE + u(-5, 5))  # abdominal wall muscle
    d_cav = d_body + (inner + p.wall)
    # the cavity: fat with mesentery and collapsed bowel (smooth-noise blobs, some gas)
    n1 = _smooth_noise(rng, (cv.h, cv.w), 6.0 * cv.scale / 64)
    n2 = _smooth_noise(rng, (cv.h, cv.w), 3.0 * cv.scale / 64)
    cav_hu = np.where(n1 > 0.35, 25.0 + 12.0 * n2, FAT + 25.0 * n2)
    cav_hu = np.where((n1 > 0.9) & (n2 > 1.2), AIR, cav_hu).astype(np.float32)
    cv.paint(d_cav, cav_hu)
    return _Body(bx, by, ax, ay, inner, d_body, d_cav)


def _paint_spine(cv: _Canvas, rng: np.random.Generator, z: float, body: _Body) -> None:
    """Paraspinal muscles, psoas, vertebra (the spinous process ends under the back's fat)."""
    sx, sy = body.spine
    d_wall = body.d_body + body.inner
    for side in (-1, 1):
        cv.paint_ellipse(sx + side * 0.15, sy + 0.14, 0.13, 0.11, side * 0.2, MUSCLE + 5, inside=d_wall)
    if z < 0.55:  # psoas muscles at the lower levels
        k = 1.0 - z / 0.55
        for side in (-1, 1):
            cv.paint_ellipse(sx + side * 0.12, sy - 0.03, 0.04 * k + 0.02, 0.05 * k + 0.02, 0.0, MUSCLE)
    rv = 0.08
    cv.paint_ellipse(sx, sy - 0.02, rv * 1.15, rv, 0.0, 650.0)  # cortex
    cv.paint_ellipse(sx, sy - 0.02, rv * 1.15 - 0.018, rv - 0.018, 0.0, 190.0 + rng.uniform(-20, 20))  # cancellous
    cv.paint_ellipse(sx, sy + 0.09, 0.032, 0.028, 0.0, CSF)  # spinal canal
    for side in (-1, 1):  # pedicles and laminae
        cv.paint_ellipse(sx + side * 0.045, sy + 0.125, 0.04, 0.013, side * -0.6, 500.0)
    cv.paint_ellipse(sx, sy + 0.18, 0.014, 0.045, 0.0, 500.0)  # spinous process


def _paint_ribs(cv: _Canvas, rng: np.random.Generator, p: Patient, z: float, body: _Body) -> None:
    """Short bright ovals in the wall, lateral and posterior (none in front); cartilage in front higher up."""
    u = rng.uniform
    n_ribs = int(rng.integers(3, 7 + int(4 * z)))
    ang = (
        rng.choice(
            np.array([-2.7, -2.35, -2.0, -1.0, -0.65, -0.3, 0.05, 0.4, 0.75, 1.1, 2.05, 2.4, 2.75, 3.1]),
            size=n_ribs,
            replace=False,
        )
        + p.rib_phase
        + u(-0.08, 0.08, size=n_ribs)
    )
    if z > 0.5:  # costal cartilage meets in front at the upper levels
        ang = np.concatenate([ang, [-1.25 + u(-0.1, 0.1), -1.9 + u(-0.1, 0.1)]])
    rib_hu = float(u(250, 600))
    ax, ay = body.ax, body.ay
    for a in ang:
        ca, sa = float(np.cos(a)), float(np.sin(a))
        # a point in the middle of the wall at angle a (super-ellipse radius)
        rr = (abs(ca) ** p.body_power + abs(sa) ** p.body_power) ** (-1.0 / p.body_power)
        shrink = 1.0 - (body.inner + p.wall * 0.5) / min(ax, ay)
        rx, ry = body.x + ca * rr * ax * shrink, body.y + sa * rr * ay * shrink
        tangent = float(np.arctan2(ca * ay, -sa * ax))
        cv.paint_ellipse(rx, ry, u(0.03, 0.07), u(0.013, 0.02), tangent, rib_hu if abs(a) > 1.1 else 120.0)


def _liver_distance(
    cv: _Canvas, p: Patient, z: float, size_l: float, centre: tuple[float, float], win: Window
) -> np.ndarray:
    """Signed distance to the liver on ``win``: the union of its warped lobes (no random draws)."""
    lx, ly = centre
    X, Y = cv.X[win], cv.Y[win]
    amp, ph, fr = p.liver_warp[0:4], p.liver_warp[4:8], p.liver_warp[8:12]
    Xw = X + amp[0] * np.sin(fr[0] * Y + ph[0] + 3 * z) + amp[1] * np.sin(fr[1] * (X + Y) + ph[1])
    Yw = Y + amp[2] * np.sin(fr[2] * X + ph[2] + 2 * z) + amp[3] * np.sin(fr[3] * (X - Y) + ph[3])
    d_liver = np.full(X.shape, np.inf, dtype=np.float32)
    for i, (dx, dy, lax, lay, la) in enumerate(p.liver_lobes):
        s = size_l if i == 0 else size_l * float(np.clip((z - p.liver_range[0]) * 2.5, 0.0, 1.0))
        if s < 0.05:
            continue
        k = 1.0 + 0.6 * max(z - 0.5, 0.0) if i == 1 else 1.0  # the left lobe reaches across higher up
        c, sn = float(np.cos(la)), float(np.sin(la))
        ddx, ddy = Xw - (lx + dx * k), Yw - (ly + dy)
        uu = (c * ddx + sn * ddy) / (lax * s * k)
        vv = (c * ddy - sn * ddx) / (lay * s)
        d_liver = np.minimum(d_liver, (np.sqrt(uu * uu + vv * vv) - 1.0) * min(lax * s * k, lay * s))
    return d_liver


def _paint_liver(cv: _Canvas, rng: np.random.Generator, p: Patient, z: float, body: _Body) -> None:
    """The liver with texture, vessels and lesions (all liver), and the gallbladder (not liver).

    Painted before the organs that cut into it; nothing (and no random draw) below the liver's tip.
    """
    u = rng.uniform
    size_l = _liver_size(p, z)
    if size_l <= 0.05:
        return
    lx, ly = body.x - 0.42 * body.ax, body.y - 0.1 * body.ay
    win = cv.window(lx + 0.15, ly, 0.75, 0.7) or FULL
    d_liver = _liver_distance(cv, p, z, size_l, (lx, ly), win)
    d_liver = np.maximum(d_liver, body.d_cav[win] + 0.006)  # stays inside the cavity
    tex = p.liver_hu + p.liver_texture * _smooth_noise(rng, d_liver.shape, 4.0 * cv.scale / 64)
    cv.paint(d_liver, tex, win, liver=True)
    d_liver_full = np.full((cv.h, cv.w), 1.0, dtype=np.float32)
    d_liver_full[win] = d_liver
    # vessels: bright (portal phase) tubes inside the liver, part of the liver mask
    for _ in range(int(rng.integers(1, 4))):
        cv.paint_ellipse(
            lx + u(-0.12, 0.15),
            ly + u(-0.12, 0.15),
            u(0.012, 0.025),
            u(0.04, 0.12),
            u(0, np.pi),
            p.liver_hu + u(10, 35),
            liver=True,
            inside=d_liver_full + 0.02,
        )
    for les_dx, les_dy, rad, contrast in p.lesions:
        rr = rad * (0.5 + 0.5 * np.sin(np.pi * min(1.0, size_l)))
        cv.paint_ellipse(
            lx + les_dx * size_l,
            ly + les_dy * size_l,
            rr,
            rr * 0.85,
            0.0,
            p.liver_hu + contrast,
            liver=True,
            inside=d_liver_full + 0.01,
        )
    if 0.25 < z < 0.6:  # gallbladder at the liver's lower medial edge, not liver
        cv.paint_ellipse(lx + 0.22, ly + 0.10, 0.07, 0.045, 0.5, 20.0 + u(-10, 10))


def _paint_retroperitoneum(cv: _Canvas, p: Patient, z: float, body: _Body) -> None:
    """IVC beside the liver, aorta in front of the spine, kidneys (lower and middle levels), spleen (upper)."""
    sx, sy = body.spine
    cv.paint_ellipse(sx - 0.12, sy - 0.16, 0.045, 0.035, 0.0, p.ivc_hu)
    cv.paint_ellipse(sx + 0.05, sy - 0.15, 0.04, 0.04, 0.0, p.aorta_hu)
    if z < 0.6:  # kidneys: bright cortex, sinus fat opening medially
        kk = float(np.clip((0.6 - z) / 0.25, 0.0, 1.0))
        for side, dz in ((-1, 0.0), (1, 0.04)):
            kx, ky = sx + side * 0.3, sy - 0.06 + dz
            cv.paint_ellipse(kx, ky, 0.085 * kk + 0.01, 0.12 * kk + 0.01, side * -0.4, p.kidney_hu)
            if kk > 0.6:
                cv.paint_ellipse(kx - side * 0.05, ky, 0.035, 0.035, 0.0, FAT)
    if z > 0.3:  # spleen on the other side
        ks = min(1.0, (z - 0.3) / 0.3)
        cv.paint_ellipse(
            body.x + 0.6 * body.ax,
            body.y + 0.2 * body.ay,
            0.1 * ks + 0.01,
            0.2 * ks + 0.01,
            -0.5,
            p.spleen_hu,
            inside=body.d_cav,
        )


def _paint_stomach(cv: _Canvas, rng: np.random.Generator, z: float, body: _Body) -> None:
    """The stomach at the upper levels: fluid with gas above its level, beside the liver."""
    if z <= 0.45:
        return
    ks = min(1.0, (z - 0.45) / 0.25)
    gx, gy = body.x + 0.25 * body.ax, body.y - 0.35 * body.ay
    e = cv.ellipse(gx, gy, 0.2 * ks + 0.02, 0.14 * ks + 0.02, 0.3)
    if e is None:
        return
    d_st, win = e
    d_st = np.maximum(d_st, body.d_cav[win])
    beside = 1.0 - cv.liver[win]
    cv.paint(d_st, 35.0 + rng.uniform(-10, 15), win, where=beside)
    cv.paint(np.maximum(d_st + 0.02, cv.Y[win] - (gy - 0.03)), AIR, win, where=beside)  # gas above the fluid level


def _paint_bowel(cv: _Canvas, rng: np.random.Generator, p: Patient, z: float, body: _Body) -> None:
    """Bowel loops (some contrast-filled, some with gas) beside the liver, never in it."""
    u = rng.uniform
    for bxo, byo, rad, hu, phase in p.bowel:
        if np.sin(phase + 6.0 * z) < -0.3:
            continue
        cx = body.x + bxo * body.ax + 0.05 * np.cos(phase + 4 * z)
        cy = body.y + byo * body.ay + 0.05 * np.sin(phase + 4 * z)
        e = cv.ellipse(cx, cy, rad, rad * u(0.6, 1.0), u(0, np.pi))
        if e is None:
            continue
        d_b, win = e
        d_b = np.maximum(d_b, body.d_cav[win])
        cv.paint(d_b, hu + u(-10, 10), win, where=1.0 - cv.liver[win])
        if hu < 100 and rng.uniform() < 0.4:
            cv.paint_ellipse(
                cx + u(-0.3, 0.3) * rad,
                cy - 0.4 * rad,
                rad * 0.35,
                rad * 0.25,
                0.0,
                AIR,
                inside=body.d_cav,
                keep_liver=True,
            )


def _scan(cv: _Canvas, rng: np.random.Generator, p: Patient) -> np.ndarray:
    """The scanner: blur (PSF), Gaussian noise, then the study's 0..255 window as uint8."""
    img = _gaussian_blur(cv.hu, p.blur * cv.scale / 64)
    img += rng.normal(0.0, p.noise, size=(cv.h, cv.w)).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_slice(
    rng: np.random.Generator,
    size: tuple[int, int] = (128, 128),
    *,
    patient: Patient | None = None,
    z: float | None = None,
    p_empty: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic slice: (uint8 [H, W] image, bool [H, W] liver mask).

    Without ``patient`` a new one is drawn; without ``z`` a height is drawn, below
    the liver's tip with probability ``p_empty`` (an empty mask). The mask is where
    the liver (with its vessels and lesions) is at least half visible.
    """
    h, w = (int(size[0]), int(size[1]))
    if h < 8 or w < 8:
        raise UsageError(f"size must be at least 8x8, got {size!r}")
    p = Patient.sample(rng) if patient is None else patient
    if z is None:
        z = _draw_height(rng, p, p_empty)
    cv = _Canvas((h, w))
    body = _paint_body(cv, rng, p, z)
    _paint_spine(cv, rng, z, body)
    _paint_ribs(cv, rng, p, z, body)
    _paint_liver(cv, rng, p, z, body)
    _paint_retroperitoneum(cv, p, z, body)
    _paint_stomach(cv, rng, z, body)
    _paint_bowel(cv, rng, p, z, body)
    return _scan(cv, rng, p), cv.liver >= 0.5


# ---------------------------------------------------------------- dataset


MANIFEST_COLUMNS = ("id", "image", "mask", "patient", "slice_idx", "z", "liver_pixels", "height", "width")


@dataclass
class SliceRecord:
    """One written pair and where it came from (fields in the order of :data:`MANIFEST_COLUMNS`)."""

    id: str
    image: str
    mask: str
    patient: str
    slice_idx: int
    z: float
    liver_pixels: int
    height: int
    width: int


@dataclass
class DatasetInfo:
    """What :func:`write_dataset` wrote (paths relative to ``root``)."""

    root: Path
    layout: str
    source: Path  # what discover() should read: the pairs CSV or the folder
    manifest: Path
    records: list[SliceRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "source": str(self.source),
            "manifest": str(self.manifest),
            "n": len(self.records),
            "n_patients": len({r.patient for r in self.records}),
            "n_empty": sum(1 for r in self.records if r.liver_pixels == 0),
        }


@dataclass(frozen=True)
class _Layout:
    """The folders and file names of one layout."""

    base: Path  # holds manifest.csv, synthetic.json and (study layout) data_pairs.csv
    images: Path
    labels: Path
    suffix: str  # a mask's name is its image's stem + suffix
    rgb: bool


def _layout(root: Path, layout: str, rgb: bool | None) -> _Layout:
    """Where ``layout`` puts its files under ``root``; RGB images by default only in the study layout."""
    if layout == "study":
        base = root / "data"
        return _Layout(base, base / "Images", base / "Labels", "_mask", True if rgb is None else bool(rgb))
    if layout == "folders":
        return _Layout(root, root / "images", root / "masks", "", bool(rgb))
    return _Layout(root, root, root, "_mask", bool(rgb))


def patient_slices(rng: np.random.Generator, n: int) -> np.ndarray:
    """Heights of ``n`` consecutive slices covering most of a patient's abdomen (ascending)."""
    lo = rng.uniform(0.0, 0.15)
    hi = rng.uniform(0.85, 1.0)
    return np.linspace(lo, hi, n) if n > 1 else np.array([rng.uniform(lo, hi)])


def _synthesize(
    n: int, size: tuple[int, int], seed: int, slices_per_patient: int
) -> Iterator[tuple[int, int, float, np.ndarray, np.ndarray]]:
    """``(patient number, slice index, z, image, mask)`` of ``n`` slices, patient after patient.

    Each patient draws from its own generator, seeded from one master generator.
    """
    master = np.random.default_rng(seed)
    i = pid = 0
    while i < n:
        prng = np.random.default_rng(master.integers(2**63))
        patient = Patient.sample(prng)
        k = min(slices_per_patient, n - i)
        for j, z in enumerate(patient_slices(prng, k)):
            image, mask = make_slice(prng, size, patient=patient, z=float(z))
            yield pid, j, float(z), image, mask
        i += k
        pid += 1


def _save_pair(
    lay: _Layout, root: Path, stem: str, where: tuple[int, int, float], image: np.ndarray, mask: np.ndarray
) -> SliceRecord:
    """Write one image and its mask (0/255) as PNGs; ``where`` is (patient number, slice index, z)."""
    pid, j, z = where
    ip = lay.images / f"{stem}.png"
    mp = lay.labels / f"{stem}{lay.suffix}.png"
    Image.fromarray(np.repeat(image[..., None], 3, axis=2) if lay.rgb else image).save(ip, compress_level=1)
    Image.fromarray(mask.astype(np.uint8) * 255).save(mp, compress_level=1)
    h, w = image.shape
    return SliceRecord(
        stem,
        ip.relative_to(root).as_posix(),
        mp.relative_to(root).as_posix(),
        f"synth{pid:03d}",
        j,
        round(z, 4),
        int(mask.sum()),
        h,
        w,
    )


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO(newline="")
    wr = csv.writer(buf)
    wr.writerow(header)
    wr.writerows(rows)
    return buf.getvalue()


def _check_dataset_arguments(n: int, layout: str, slices_per_patient: int) -> None:
    if layout not in LAYOUTS:
        raise UsageError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if n < 1:
        raise UsageError(f"n must be >= 1, got {n}")
    if slices_per_patient < 1:
        raise UsageError(f"slices_per_patient must be >= 1, got {slices_per_patient}")


def write_dataset(
    out_dir: str | os.PathLike[str],
    n: int,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    layout: str = "study",
    slices_per_patient: int = 8,
    rgb: bool | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``n`` synthetic pairs; consecutive slices belong to one patient.

    Layouts (all readable by :func:`liverseg.core.images.discover`):

    * ``"study"``: ``data/Images/NNN.png`` (RGB, R=G=B, as the study's files),
      ``data/Labels/NNN_mask.png`` and ``data/data_pairs.csv`` (``X,Y`` relative to
      ``out_dir``, the folder that holds ``data/``: read it with ``root=out_dir``);
    * ``"folders"``: ``images/NNN.png`` + ``masks/NNN.png``;
    * ``"flat"``: ``NNN.png`` + ``NNN_mask.png`` in one folder.

    A ``manifest.csv`` beside the pairs (columns id, image, mask, patient,
    slice_idx, z, liver_pixels, height, width) names each slice's patient, and
    ``synthetic.json`` records the arguments; both (and the pairs CSV) are written
    atomically. Returns ``DatasetInfo.to_dict()`` plus ``"info"``: the :class:`DatasetInfo`.
    Bad arguments raise :class:`~liverseg.core.errors.UsageError` (a ``ValueError``).
    """
    _check_dataset_arguments(n, layout, slices_per_patient)
    from tqdm import tqdm

    root = Path(out_dir)
    lay = _layout(root, layout, rgb)
    lay.images.mkdir(parents=True, exist_ok=True)
    lay.labels.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(n - 1)))
    records: list[SliceRecord] = []
    with tqdm(total=n, desc="synthesizing", unit="slice", disable=not progress, leave=False) as bar:
        for i, (pid, j, z, image, mask) in enumerate(_synthesize(n, size, seed, slices_per_patient)):
            records.append(_save_pair(lay, root, f"{i:0{width}d}", (pid, j, z), image, mask))
            bar.update(1)

    manifest = write_text_atomic(lay.base / "manifest.csv", _csv_text(MANIFEST_COLUMNS, map(astuple, records)))
    source = root
    if layout == "study":
        pairs = [(r.image, r.mask) for r in records]
        source = write_text_atomic(lay.base / "data_pairs.csv", _csv_text(["X", "Y"], pairs))
    meta = {
        "generator": "liverseg.apps.synthetic",
        "seed": seed,
        "n": n,
        "size": list(size),
        "layout": layout,
        "slices_per_patient": slices_per_patient,
        "rgb": lay.rgb,
    }
    write_text_atomic(lay.base / "synthetic.json", json.dumps(meta, indent=2) + "\n")
    info = DatasetInfo(root=root, layout=layout, source=source, manifest=manifest, records=records)
    out = info.to_dict()
    out["info"] = info
    return out


def preview_grid(images: list[np.ndarray], masks: list[np.ndarray] | None = None, cols: int = 8) -> np.ndarray:
    """A uint8 RGB contact sheet; mask outlines in red (for looking at the data)."""
    if not images:
        raise UsageError("no images")
    h, w = images[0].shape
    rows = (len(images) + cols - 1) // cols
    sheet = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for k, img in enumerate(images):
        tile = np.repeat(img[..., None], 3, axis=2).copy()
        if masks is not None:
            m = masks[k]
            edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
            tile[edge] = (255, 0, 0)
        r, c = divmod(k, cols)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    return sheet
