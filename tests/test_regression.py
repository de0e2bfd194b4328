"""Regression/localization outputs: IoU metrics against a NumPy reference, and a tiny generated
localization set on which F (boxes, MSE) and a sum/subtraction parity model are trained and scored."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from parm.coding import CodeSpec, build_code, erasure_patterns
from parm.data.localization import make_localization_set
from parm.metrics.regression import (
    IoUHitRate,
    LocalizationMetrics,
    MeanIoU,
    box_iou,
    iou_hit_rate,
    localization_agreement,
)


def numpy_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain per-row IoU of (x1, y1, x2, y2) boxes, corners sorted; zero union scores 0."""
    out = np.zeros(len(a))
    for i, (p, t) in enumerate(zip(a, b, strict=True)):
        px1, px2 = sorted((p[0], p[2]))
        py1, py2 = sorted((p[1], p[3]))
        tx1, tx2 = sorted((t[0], t[2]))
        ty1, ty2 = sorted((t[1], t[3]))
        iw = max(0.0, min(px2, tx2) - max(px1, tx1))
        ih = max(0.0, min(py2, ty2) - max(py1, ty1))
        inter = iw * ih
        union = (px2 - px1) * (py2 - py1) + (tx2 - tx1) * (ty2 - ty1) - inter
        out[i] = inter / union if union > 0 else 0.0
    return out


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    lo = rng.uniform(0, 0.6, (n, 2))
    return np.concatenate([lo, lo + rng.uniform(0.05, 0.4, (n, 2))], axis=1)


def test_box_iou_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    a = random_boxes(rng, 200)
    b = a + rng.normal(0, 0.05, a.shape)  # some near-hits, some flipped corners
    b[:5] = a[:5]
    b[5:8] = a[5:8] + 2.0  # disjoint
    ours = box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(ours, numpy_iou(a, b), rtol=1e-12, atol=1e-12)
    assert np.allclose(ours[:5], 1.0) and np.all(ours[5:8] == 0.0)
    zero = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    assert float(box_iou(zero, zero)) == 0.0
    assert float(box_iou(torch.tensor([[0.0, 0.0, float("nan"), 1.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))) == 0.0


@pytest.mark.parametrize("threshold", [0.5, 0.75, 0.9])
def test_hit_rate_metric_and_functional_twin_match_numpy(threshold: float) -> None:
    rng = np.random.default_rng(1)
    a = random_boxes(rng, 300)
    b = a + rng.normal(0, 0.03, a.shape)
    expected = float(np.mean(numpy_iou(a, b) >= threshold))
    pred, target = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    assert float(iou_hit_rate(pred, target, threshold)) == pytest.approx(expected)
    assert float(localization_agreement(pred, target, threshold)) == pytest.approx(expected)
    metric = IoUHitRate(threshold)
    for chunk in range(0, 300, 70):  # uneven batches
        metric.update(pred[chunk:chunk + 70], target[chunk:chunk + 70])
    assert float(metric.compute()) == pytest.approx(expected)
    miou = MeanIoU()
    miou.update(pred, target)
    assert float(miou.compute()) == pytest.approx(float(np.mean(numpy_iou(a, b))), rel=1e-5)


def test_localization_metrics_bundle() -> None:
    rng = np.random.default_rng(2)
    gt = torch.from_numpy(random_boxes(rng, 100)).float()
    f_out = gt + 0.01
    recon = f_out.clone()
    recon[50:] += 0.3  # half of the reconstructions are far off
    metrics = LocalizationMetrics(fractions=(0.1, 0.5), default_box=(0.2, 0.2, 0.6, 0.6))
    metrics.update_available(f_out, gt)
    metrics.update_degraded(recon, f_out, gt)
    out = metrics.compute()
    a_a = float(np.mean(numpy_iou(f_out.numpy(), gt.numpy()) >= 0.75))
    a_d = float(np.mean(numpy_iou(recon.numpy(), gt.numpy()) >= 0.75))
    agree = float(np.mean(numpy_iou(recon.numpy(), f_out.numpy()) >= 0.75))
    assert out["available_iou"] == pytest.approx(a_a)
    assert out["degraded_iou"] == pytest.approx(a_d)
    assert out["agreement_iou"] == pytest.approx(agree) and agree == pytest.approx(0.5)
    assert out["overall_iou@0.5"] == pytest.approx(0.5 * a_a + 0.5 * a_d)
    assert out["degraded_mse"] == pytest.approx(0.5 * 0.09, rel=1e-4)
    default = np.tile(np.array([[0.2, 0.2, 0.6, 0.6]]), (100, 1))
    assert out["default_iou"] == pytest.approx(float(np.mean(numpy_iou(default, gt.numpy()) >= 0.75)))
    metrics.reset()
    with pytest.warns(UserWarning, match="before the ``update`` method"):
        assert np.isnan(metrics.compute()["available_iou"])


def test_box_checks_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"must have shape \(N, 4\)"):
        box_iou(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="same shape"):
        box_iou(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        IoUHitRate(1.5)


# ---- a tiny localization set, generated (parm.data.localization, shared with LocalizationDataModule) ----


def test_generated_localization_set() -> None:
    images, boxes = make_localization_set(64, seed=3)
    assert images.shape == (64, 1, 16, 16) and boxes.shape == (64, 4)
    assert bool((boxes[:, 2:] > boxes[:, :2]).all()) and bool(((boxes >= 0) & (boxes <= 1)).all())
    x1, y1, x2, y2 = (boxes[0] * 16).long().tolist()
    assert float(images[0, 0, y1:y2, x1:x2].mean()) > 0.7 > float(images[0, 0].mean())


def _fit(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, steps: int, lr: float = 3e-3) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        batch = torch.arange(step * 64, step * 64 + 64) % inputs.shape[0]
        loss = nn.functional.mse_loss(model(inputs[batch]), targets[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_parity_model_for_box_regression_end_to_end() -> None:
    """F regresses boxes with MSE; F_P is trained on F(X1) + F(X2) (k = 2, sum/subtraction); decoded
    boxes are scored with IoU >= 0.75 against the ground truth and against F."""
    torch.manual_seed(0)
    images, boxes = make_localization_set(1024, seed=0)
    test_images, test_boxes = make_localization_set(256, seed=1)

    def net() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 4))

    f = net()
    _fit(f, images, boxes, steps=600)
    code = build_code("sum", "subtraction", CodeSpec(2, 1), (1, 16, 16), (4,))
    with torch.no_grad():
        f.eval()
        targets = f(images).reshape(-1, 2, 4).sum(dim=1)  # F_P(X1 + X2) ~ F(X1) + F(X2)
        parities = code.encode(images.reshape(-1, 2, 1, 16, 16))[:, 0]
    parity_model = net()
    _fit(parity_model, parities, targets, steps=600)
    metrics = LocalizationMetrics(default_box=boxes.mean(dim=0).tolist())
    with torch.no_grad():
        outputs = f(test_images)
        metrics.update_available(outputs, test_boxes)
        groups, labels = outputs.reshape(-1, 2, 4), test_boxes.reshape(-1, 2, 4)
        parity_out = parity_model(code.encode(test_images.reshape(-1, 2, 1, 16, 16))[:, 0])[:, None]
        for pattern in erasure_patterns(code.spec):
            decoded = code.decode(groups, parity_out, pattern[None].expand(groups.shape[0], -1))
            erased = ~pattern[:2]
            metrics.update_degraded(decoded[:, erased].reshape(-1, 4), groups[:, erased].reshape(-1, 4),
                                    labels[:, erased].reshape(-1, 4))
    out = metrics.compute()
    assert out["available_iou"] > 0.3, out  # F localises; the parity reconstructions are rougher
    assert 0.0 < out["degraded_miou"] <= out["available_miou"] + 0.05, out
    assert out["degraded_mse"] < 0.05, out
