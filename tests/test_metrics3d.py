"""3D metrics: hand-made volumes with known answers, an independent brute-force computation, the empty rules."""

from __future__ import annotations

import numpy as np
import pytest

from liverseg.core.metrics3d import check_spacing, surface_distances, volume_metrics, volume_ml

pytest.importorskip("scipy")


def _cube(shape=(30, 30, 30), lo=8, n=12, shift=(0, 0, 0)) -> np.ndarray:
    m = np.zeros(shape, bool)
    s = tuple(slice(lo + d, lo + d + n) for d in shift)
    m[s] = True
    return m


def _border_points(mask, spacing):
    from scipy import ndimage

    b = mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)
    return np.argwhere(b) * np.asarray(spacing)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_shifted_cube_hd95_is_the_shift_in_mm_of_its_axis(axis):
    spacing = (2.5, 0.7, 0.9)
    shift = [0, 0, 0]
    shift[axis] = 3
    a, b = _cube(), _cube(shift=tuple(shift))
    m = volume_metrics(a, b, spacing)
    assert m["dice"] == pytest.approx((12 - 3) / 12)
    assert m["hd95_mm"] == pytest.approx(3 * spacing[axis])


def test_concentric_spheres_distance_is_the_radius_difference():
    g = np.mgrid[:48, :48, :48] - 23.5
    r = np.sqrt((g**2).sum(0))
    m = volume_metrics(r < 8, r < 14, (1.0, 1.0, 1.0))
    assert m["assd_mm"] == pytest.approx(6.0, abs=1.0)
    assert m["hd95_mm"] == pytest.approx(6.0, abs=1.0)
    same = volume_metrics(r < 8, r < 8, (1.0, 1.0, 1.0))
    assert (same["dice"], same["hd95_mm"], same["assd_mm"], same["nsd_2mm"]) == (1.0, 0.0, 0.0, 1.0)


def test_matches_an_independent_brute_force_computation():
    from scipy import ndimage
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(3)
    spacing = (2.0, 0.8, 0.6)
    a = ndimage.gaussian_filter(rng.normal(size=(20, 32, 32)), 2) > 0.05
    b = ndimage.gaussian_filter(rng.normal(size=(20, 32, 32)), 2) > 0.05
    pa, pb = _border_points(a, spacing), _border_points(b, spacing)
    d_ab = cKDTree(pb).query(pa)[0]
    d_ba = cKDTree(pa).query(pb)[0]
    m = volume_metrics(a, b, spacing)
    assert m["hd95_mm"] == pytest.approx(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)), abs=1e-6)
    assert m["assd_mm"] == pytest.approx(np.concatenate([d_ab, d_ba]).mean(), abs=1e-6)
    nsd = ((d_ab <= 2 + 1e-6).sum() + (d_ba <= 2 + 1e-6).sum()) / (len(d_ab) + len(d_ba))
    assert m["nsd_2mm"] == pytest.approx(nsd, abs=1e-9)


def test_masks_touching_the_array_edge_have_a_boundary_there():
    a = np.zeros((10, 10, 10), bool)
    a[:, :, :5] = True  # touches five faces of the array
    b = a.copy()
    d1, d2 = surface_distances(a, b, (1, 1, 1))
    assert d1.size == _border_points(a, (1, 1, 1)).shape[0] and not d1.any() and not d2.any()


def test_empty_rules():
    z = np.zeros((5, 5, 5), bool)
    one = z.copy()
    one[2, 2, 2] = True
    both = volume_metrics(z, z, (1, 1, 1))
    assert (both["dice"], both["iou"], both["hd95_mm"], both["assd_mm"], both["nsd_2mm"]) == (1.0, 1.0, 0.0, 0.0, 1.0)
    for p, t in ((z, one), (one, z)):
        m = volume_metrics(p, t, (1, 1, 1))
        assert (m["dice"], m["iou"], m["hd95_mm"], m["assd_mm"], m["nsd_2mm"]) == (0.0, 0.0, None, None, 0.0)


def test_volume_ml_and_errors():
    m = np.zeros((20, 20, 20), bool)
    m[:10, :10, :10] = True
    assert volume_ml(m, (1, 1, 2)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="shape"):
        volume_metrics(m, m[:5], (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        check_spacing((1, 0, 1))
