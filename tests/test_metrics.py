"""The confusion matrix and the paper's four metrics against matrices worked out by hand."""

from __future__ import annotations

import json
from fractions import Fraction as F

import numpy as np
import pytest
import torch

from fcnseg.evaluation.metrics import ConfusionMatrix, metrics_from_matrix


def _approx(x: F) -> pytest.approx:
    return pytest.approx(float(x), abs=1e-12)


def test_void_pixels_are_skipped_and_four_metrics_match_hand_computation():
    # K = 3; the last two pixels are void (255) and must not count, whatever the prediction there.
    target = torch.tensor([[0, 0, 0, 1], [1, 2, 255, 255]])
    pred = torch.tensor([[0, 0, 1, 1], [2, 2, 0, 2]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    # rows = ground truth, columns = prediction:
    #   gt 0: predicted 0, 0, 1   -> [2, 1, 0]
    #   gt 1: predicted 1, 2      -> [0, 1, 1]
    #   gt 2: predicted 2         -> [0, 0, 1]
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert cm.matrix.dtype == torch.int64

    m = cm.compute(["a", "b", "c"])
    # 6 labelled pixels, 4 on the diagonal.
    assert m["pixel_acc"] == _approx(F(4, 6))
    # acc_i = n_ii / t_i = 2/3, 1/2, 1/1 -> mean = (4/6 + 3/6 + 6/6) / 3 = 13/18
    assert m["mean_acc"] == _approx(F(13, 18))
    # column sums p = [2, 2, 2]; IoU_i = n_ii / (t_i + p_i - n_ii):
    #   2 / (3 + 2 - 2) = 2/3,  1 / (2 + 2 - 1) = 1/3,  1 / (1 + 2 - 1) = 1/2  -> mean = (3/2) / 3 = 1/2
    assert m["mean_iou"] == _approx(F(1, 2))
    # freq = t / 6 = 1/2, 1/3, 1/6; fw = 1/2*2/3 + 1/3*1/3 + 1/6*1/2 = 12/36 + 4/36 + 3/36 = 19/36
    assert m["fw_iou"] == _approx(F(19, 36))
    assert [c["name"] for c in m["per_class"]] == ["a", "b", "c"]
    assert [c["iou"] for c in m["per_class"]] == [_approx(F(2, 3)), _approx(F(1, 3)), _approx(F(1, 2))]
    assert [c["acc"] for c in m["per_class"]] == [_approx(F(2, 3)), _approx(F(1, 2)), _approx(F(1, 1))]
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_class_only_in_prediction_counts_in_mean_iou_not_mean_acc_and_absent_class_counts_in_neither():
    # K = 4: class 2 appears only in the prediction, class 3 appears nowhere.
    target = np.array([0, 0, 1, 1, 1, 0])
    pred = np.array([0, 2, 1, 1, 0, 0])
    cm = ConfusionMatrix(4)
    cm.update(pred, target)  # numpy input is accepted
    #   gt 0 (pixels 0, 1, 5): predicted 0, 2, 0 -> [2, 0, 1, 0]
    #   gt 1 (pixels 2, 3, 4): predicted 1, 1, 0 -> [1, 2, 0, 0]
    assert cm.matrix.tolist() == [[2, 0, 1, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]

    m = cm.compute()
    assert m["pixel_acc"] == _approx(F(4, 6))
    # acc = 2/3, 2/3, 0/0, 0/0 -> mean over the two GT classes = 2/3
    assert m["mean_acc"] == _approx(F(2, 3))
    # p = [3, 2, 1, 0]; IoU = 2/(3+3-2) = 1/2, 2/(3+2-2) = 2/3, 0/(0+1-0) = 0, 0/0 -> mean over 3 classes = 7/18
    # (7/18, not the 7/12 one would get by dropping the prediction-only class 2)
    assert m["mean_iou"] == _approx(F(7, 18))
    # freq = 1/2, 1/2, 0, 0 -> fw = 1/2*1/2 + 1/2*2/3 = 7/12
    assert m["fw_iou"] == _approx(F(7, 12))
    per_class = m["per_class"]
    assert [c["name"] for c in per_class] == ["0", "1", "2", "3"]
    assert per_class[2] == {"name": "2", "iou": 0.0, "acc": None}
    assert per_class[3] == {"name": "3", "iou": None, "acc": None}
    # undefined values are null, so the report is strict JSON
    json.dumps(m, allow_nan=False)


def test_perfect_prediction_scores_one():
    target = torch.tensor([[[0, 1], [2, 255]], [[2, 2], [1, 0]]])  # (N=2, H=2, W=2) with one void pixel
    pred = torch.where(target == 255, torch.zeros_like(target), target)
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 3, 0], [0, 0, 0, 0]]
    m = cm.compute()
    assert m["pixel_acc"] == m["mean_acc"] == m["mean_iou"] == m["fw_iou"] == 1.0
    assert [c["iou"] for c in m["per_class"]] == [1.0, 1.0, 1.0, None]


def test_all_wrong_prediction_scores_zero():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([1, 1, 0]), torch.tensor([0, 0, 1]))
    m = cm.compute()
    assert m["pixel_acc"] == m["mean_acc"] == m["mean_iou"] == m["fw_iou"] == 0.0


def test_targets_outside_class_range_are_skipped_like_void():
    cm = ConfusionMatrix(3, ignore_index=255)
    target = torch.tensor([0, 3, -1, 7, 255, 1])
    pred = torch.tensor([0, 2, 2, 1, 1, 1])
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_custom_ignore_index_inside_class_range():
    cm = ConfusionMatrix(3, ignore_index=0)
    cm.update(torch.tensor([1, 1, 2]), torch.tensor([0, 1, 2]))
    assert cm.matrix.tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_uint8_target_with_void():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 255, 1], dtype=torch.uint8))
    assert cm.matrix.tolist() == [[1, 0], [0, 1]]


def test_accumulates_over_updates_merges_and_resets():
    a = ConfusionMatrix(2)
    a.update(torch.tensor([0, 1]), torch.tensor([0, 0]))  # [[1, 1], [0, 0]]
    a.update(torch.tensor([[1]]), torch.tensor([[1]]))  # + [[0, 0], [0, 1]]
    assert a.matrix.tolist() == [[1, 1], [0, 1]]
    b = ConfusionMatrix(2)
    b.update(np.array([0, 0]), np.array([1, 1]))  # [[0, 0], [2, 0]]
    assert a.merge(b) is a
    assert a.matrix.tolist() == [[1, 1], [2, 1]]
    assert b.matrix.tolist() == [[0, 0], [2, 0]]  # merge leaves the other matrix alone
    a.reset()
    assert a.matrix.tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match="merge"):
        a.merge(ConfusionMatrix(3))


def test_matrix_is_a_copy():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0]), torch.tensor([0]))
    cm.matrix[0, 0] = 100
    assert cm.matrix[0, 0] == 1


def test_bincount_matches_pixel_by_pixel_count():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (2, 7, 5), generator=gen)
    target[target == 5] = 255
    pred = torch.randint(0, 5, (2, 7, 5), generator=gen)
    cm = ConfusionMatrix(5)
    cm.update(pred, target)
    expected = [[0] * 5 for _ in range(5)]
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist(), strict=True):
        if t != 255:
            expected[t][p] += 1
    assert cm.matrix.tolist() == expected


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), "shape"),
        (torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), "argmax"),
        (torch.zeros(3, 3), torch.zeros(3, 3, dtype=torch.long), "integer"),
        (torch.tensor([0, 2]), torch.tensor([0, 1]), "outside"),
    ],
)
def test_update_rejects_bad_input(pred, target, message):
    with pytest.raises(ValueError, match=message):
        ConfusionMatrix(2).update(pred, target)


def test_prediction_outside_range_on_void_pixel_is_fine():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 9]), torch.tensor([0, 255]))
    assert cm.matrix.tolist() == [[1, 0], [0, 0]]


def test_empty_matrix_and_bad_names_raise():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([255, 255]))
    with pytest.raises(ValueError, match="empty"):
        cm.compute()
    with pytest.raises(ValueError, match="names"):
        metrics_from_matrix(np.eye(2, dtype=np.int64), ["only-one"])
    with pytest.raises(ValueError, match="K, K"):
        metrics_from_matrix(np.zeros((2, 3), dtype=np.int64))
