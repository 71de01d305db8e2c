"""Metrics against hand-computed confusion matrices (arithmetic in the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from liverseg.core.metrics import METRIC_NAMES, SegmentationMetrics, StudyBatchMetrics, confusion, image_scores, scores


def masks_from_grid(pred_rows: list[str], truth_rows: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """'#' = liver, '.' = background."""
    pred = np.array([[c == "#" for c in r] for r in pred_rows])
    truth = np.array([[c == "#" for c in r] for r in truth_rows])
    return pred, truth


def test_confusion_counts_a_4x4_example():
    pred, truth = masks_from_grid(
        ["##..", "##..", "....", "...#"],
        ["###.", "##..", "....", "...."],
    )
    # TP: (0,0) (0,1) (1,0) (1,1) = 4; FP: (3,3) = 1; FN: (0,2) = 1; TN: 16 - 4 - 1 - 1 = 10
    assert confusion(pred, truth) == (4, 1, 1, 10)


def test_scores_by_hand():
    s = scores(tp=4, fp=1, fn=1, tn=10)
    # dice = 2*4 / (2*4 + 1 + 1) = 8/10
    assert s["dice"] == pytest.approx(0.8)
    # iou = 4 / (4 + 1 + 1) = 4/6
    assert s["iou"] == pytest.approx(4 / 6)
    # precision = 4 / (4 + 1) ; recall = 4 / (4 + 1)
    assert s["precision"] == pytest.approx(0.8)
    assert s["recall"] == pytest.approx(0.8)
    # mPA = 1/2 (TP/(TP+FN) + TN/(TN+FP)) = 1/2 (4/5 + 10/11) = 1/2 (0.8 + 0.909090...) = 0.854545...
    assert s["mPA"] == pytest.approx(0.5 * (4 / 5 + 10 / 11))
    assert s["mPA"] == pytest.approx(0.8545454545)
    # mIoU = 1/2 (TP/(TP+FP+FN) + TN/(TN+FP+FN)) = 1/2 (4/6 + 10/12) = 1/2 (0.6667 + 0.8333) = 0.75
    assert s["mIoU"] == pytest.approx(0.75)


def test_scores_asymmetric_errors():
    # TP 30, FP 10, FN 20, TN 40 (100 pixels)
    s = scores(30, 10, 20, 40)
    assert s["dice"] == pytest.approx(60 / 90)  # 2*30 / (60 + 10 + 20)
    assert s["iou"] == pytest.approx(30 / 60)  # 30 / (30 + 10 + 20)
    assert s["precision"] == pytest.approx(30 / 40)  # 30 / (30 + 10)
    assert s["recall"] == pytest.approx(30 / 50)  # 30 / (30 + 20)
    # mPA = 1/2 (30/50 + 40/50) = 1/2 (0.6 + 0.8) = 0.7
    assert s["mPA"] == pytest.approx(0.7)
    # mIoU = 1/2 (30/60 + 40/70) = 1/2 (0.5 + 0.571428...) = 0.535714...
    assert s["mIoU"] == pytest.approx(0.5 * (0.5 + 40 / 70))
    # the background terms are not the liver terms: a formula that swapped FP and FN would differ
    swapped = scores(30, 20, 10, 40)
    assert swapped["precision"] == pytest.approx(30 / 50) and swapped["recall"] == pytest.approx(30 / 40)
    assert swapped["mPA"] == pytest.approx(0.5 * (30 / 40 + 40 / 60))  # 1/2 (0.75 + 0.6667) = 0.7083
    assert swapped["mPA"] != pytest.approx(s["mPA"])


def test_perfect_prediction_is_one_everywhere():
    truth = np.zeros((8, 8), bool)
    truth[2:5, 3:7] = True
    s = image_scores(truth.copy(), truth)
    assert all(s[k] == 1.0 for k in METRIC_NAMES)


def test_all_wrong_prediction():
    truth = np.zeros((4, 4), bool)
    truth[:2] = True  # 8 liver pixels
    s = image_scores(~truth, truth)  # TP 0, FP 8, FN 8, TN 0
    assert s["dice"] == 0.0 and s["iou"] == 0.0 and s["precision"] == 0.0 and s["recall"] == 0.0
    # mPA = 1/2 (0/8 + 0/8) = 0; mIoU = 1/2 (0/16 + 0/16) = 0
    assert s["mPA"] == 0.0 and s["mIoU"] == 0.0


# ---------------------------------------------------------------- the empty-mask rules (metrics.py docstring)


def test_both_empty_counts_as_perfect():
    empty = np.zeros((5, 5), bool)
    s = image_scores(empty, empty)  # TP 0, FP 0, FN 0, TN 25
    assert s["dice"] == s["iou"] == s["precision"] == s["recall"] == 1.0
    # mPA = 1/2 (rule: 1 + 25/25) = 1; mIoU = 1/2 (rule: 1 + 25/25) = 1
    assert s["mPA"] == 1.0 and s["mIoU"] == 1.0


def test_prediction_empty_truth_not():
    truth = np.zeros((5, 5), bool)
    truth[0, :2] = True  # 2 liver pixels
    s = image_scores(np.zeros_like(truth), truth)  # TP 0, FP 0, FN 2, TN 23
    assert s["dice"] == 0.0 and s["iou"] == 0.0 and s["recall"] == 0.0
    assert s["precision"] == 0.0  # 0/0 with FN > 0: an error the ratio could have counted
    # mPA = 1/2 (0/2 + 23/23) = 0.5; mIoU = 1/2 (0/2 + 23/25) = 0.46
    assert s["mPA"] == pytest.approx(0.5)
    assert s["mIoU"] == pytest.approx(0.5 * 23 / 25)


def test_truth_empty_prediction_not():
    pred = np.zeros((5, 5), bool)
    pred[4, 4] = True  # 1 false positive
    s = image_scores(pred, np.zeros_like(pred))  # TP 0, FP 1, FN 0, TN 24
    assert s["dice"] == 0.0 and s["iou"] == 0.0 and s["precision"] == 0.0
    assert s["recall"] == 0.0  # 0/0 with FP > 0
    # mPA = 1/2 (rule: 0 + 24/25) = 0.48; mIoU = 1/2 (0/1 + 24/25) = 0.48
    assert s["mPA"] == pytest.approx(0.48)
    assert s["mIoU"] == pytest.approx(0.48)


def test_all_liver_background_absent():
    full = np.ones((3, 3), bool)
    s = image_scores(full, full)  # TP 9, FP 0, FN 0, TN 0
    # background terms are 0/0 with no error: 1; so mPA = mIoU = 1
    assert s["mPA"] == 1.0 and s["mIoU"] == 1.0
    pred = full.copy()
    pred[0, 0] = False  # TP 8, FN 1, FP 0, TN 0
    s = image_scores(pred, full)
    # background: TN/(TN+FP) = 0/0 with FN = 1 -> 0; so mPA = 1/2 (8/9 + 0)
    assert s["mPA"] == pytest.approx(0.5 * 8 / 9)
    # mIoU = 1/2 (8/9 + 0/(0+0+1)) = 4/9
    assert s["mIoU"] == pytest.approx(4 / 9)


# ---------------------------------------------------------------- accumulation


def test_macro_and_micro_differ_on_a_crafted_pair():
    # image A: big liver, perfect: TP 90, FP 0, FN 0, TN 10 -> dice 1
    # image B: small liver, missed: TP 0, FP 0, FN 10, TN 90 -> dice 0
    a_truth = np.zeros((10, 10), bool)
    a_truth[:9] = True
    b_truth = np.zeros((10, 10), bool)
    b_truth[0] = True
    m = SegmentationMetrics()
    m.update(a_truth.copy(), a_truth)
    m.update(np.zeros_like(b_truth), b_truth)
    assert m.per_image == [(90, 0, 0, 10), (0, 0, 10, 90)]
    r = m.compute()
    assert r["n_images"] == 2
    # macro dice = (1 + 0) / 2 = 0.5
    assert r["dice"] == pytest.approx(0.5)
    # micro: pooled TP 90, FP 0, FN 10, TN 100 -> dice = 180 / (180 + 10) = 0.947368...
    assert r["micro_dice"] == pytest.approx(180 / 190)
    # macro mPA: A = 1/2 (1 + 1) = 1; B = 1/2 (0/10 + 90/90) = 0.5; mean 0.75
    assert r["mPA"] == pytest.approx(0.75)
    # micro mPA = 1/2 (90/100 + 100/100) = 0.95
    assert r["micro_mPA"] == pytest.approx(0.95)
    # macro mIoU: A = 1/2 (90/90 + 10/10) = 1; B = 1/2 (0/10 + 90/100) = 0.45; mean 0.725
    assert r["mIoU"] == pytest.approx(0.725)
    # micro mIoU = 1/2 (90/100 + 100/110)
    assert r["micro_mIoU"] == pytest.approx(0.5 * (0.9 + 100 / 110))


def test_update_accepts_batches_and_reset():
    rng = np.random.default_rng(0)
    pred = rng.random((3, 1, 6, 7)) > 0.5
    truth = rng.random((3, 1, 6, 7)) > 0.5
    m = SegmentationMetrics()
    last = m.update(pred, truth)
    assert len(m) == 3
    assert m.per_image[1] == confusion(pred[1, 0], truth[1, 0])
    assert last == image_scores(pred[2, 0], truth[2, 0])
    one_by_one = SegmentationMetrics()
    for p, t in zip(pred, truth):
        one_by_one.update(p[0], t[0])
    assert one_by_one.compute() == m.compute()
    m.add_confusion(1, 2, 3, 4)
    assert m.per_image[-1] == (1, 2, 3, 4)
    m.reset()
    assert len(m) == 0 and m.compute() == {"n_images": 0}


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        confusion(np.zeros((2, 3), bool), np.zeros((3, 2), bool))
    with pytest.raises(ValueError, match="shape"):
        SegmentationMetrics().update(np.zeros((2, 3), bool), np.zeros((2, 4), bool))


def test_matches_a_brute_force_reference_on_random_masks():
    rng = np.random.default_rng(1)
    for _ in range(20):
        pred = rng.random((9, 11)) > rng.random()
        truth = rng.random((9, 11)) > rng.random()
        tp = sum(1 for p, t in zip(pred.ravel(), truth.ravel()) if p and t)
        fp = sum(1 for p, t in zip(pred.ravel(), truth.ravel()) if p and not t)
        fn = sum(1 for p, t in zip(pred.ravel(), truth.ravel()) if not p and t)
        tn = pred.size - tp - fp - fn
        assert confusion(pred, truth) == (tp, fp, fn, tn)
        s = image_scores(pred, truth)
        if tp + fn and tn + fp:
            assert s["mPA"] == pytest.approx(0.5 * (tp / (tp + fn) + tn / (tn + fp)))
        if tp + fp + fn and tn + fp + fn:
            assert s["mIoU"] == pytest.approx(0.5 * (tp / (tp + fp + fn) + tn / (tn + fp + fn)))


# ---------------------------------------------------------------- empty masks as NaN (nnU-Net's convention)


def test_nan_rule_gives_nan_for_0_over_0_and_leaves_the_image_out_of_means():
    empty = np.zeros((4, 4), bool)
    liver = np.zeros((4, 4), bool)
    liver[:2] = True
    half = liver.copy()
    half[1] = False  # 4 of the 8 liver pixels found
    m = SegmentationMetrics(empty="nan")
    assert np.isnan(m.update(empty, empty)["dice"])  # both empty: 0/0
    m.update(half, liver)
    out = m.compute()
    assert out["dice"] == pytest.approx(2 * 4 / (2 * 4 + 4))  # only the second image counts
    assert out["n_nan_dice"] == 1 and out["n_images"] == 2
    assert not np.isnan(out["mPA"]) and out["n_nan_mPA"] == 1  # liver accuracy 0/0 on the empty image
    rule = SegmentationMetrics()  # the default rule counts the empty image as perfect
    rule.update(empty, empty)
    rule.update(half, liver)
    assert rule.compute()["dice"] == pytest.approx((1 + 2 * 4 / 12) / 2)
    with pytest.raises(ValueError, match="empty"):
        SegmentationMetrics(empty="zero")


def test_study_batch_metrics_pool_per_batch_in_float32_and_propagate_nan():
    rng = np.random.default_rng(3)
    truth = rng.random((2, 8, 8)) > 0.5
    pred = rng.random((2, 8, 8)) > 0.5
    m = StudyBatchMetrics()
    mpa, miou = m.update(pred, truth)  # one batch of two images: one pooled matrix
    tp, fp, fn, tn = (np.float32(v) for v in confusion(pred, truth))
    assert mpa == float(np.float32((tn / (tn + fp) + tp / (tp + fn)) / np.float32(2)))
    assert miou == pytest.approx(0.5 * (tn / (tn + fp + fn) + tp / (tp + fp + fn)), rel=1e-6)
    assert m.compute()["mPA"] == mpa
    m.update(np.zeros((1, 8, 8), bool), np.zeros((1, 8, 8), bool))  # no liver anywhere: TP/(TP+FN) = 0/0
    out = m.compute()
    assert np.isnan(out["mPA"]) and np.isnan(out["mIoU"]) and out["n_batches"] == 2
