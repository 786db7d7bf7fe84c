"""The fused mean squared error (csrc/ops/mse.cpp, rnncore.nn.mse_loss / MSELoss): a slow numpy
reference for every reduction and mask form, float64 central differences, torch's
F.mse_loss, 1 thread == N threads bit for bit, and bad input (NaN, shapes, masks)."""
import numpy as np
import pytest

import rnncore
from rnncore import _core, nn
from gradcheck import numeric_grad
from helpers import assert_close

T, B, F = 5, 3, 2


def reference(x, y, reduction, mask=None):
    """The obvious version: per-element weights broadcast from the mask, then reduce."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w = np.ones_like(x) if mask is None else np.asarray(mask, np.float64)
    if w.shape != x.shape:
        w = np.broadcast_to(w[..., None], x.shape)
    per = w * (x - y) ** 2
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / w.sum() if w.sum() > 0 else 0.0


def _data(rng, dtype=np.float64, shape=(T, B, F)):
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("mask_kind", [None, "position", "element", "bool"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_numpy_reference(reduction, mask_kind, dtype):
    rng = np.random.default_rng(0)
    x, y = _data(rng, dtype)
    mask = {None: None, "position": rng.uniform(0, 2, (T, B)), "element": rng.uniform(0, 2, (T, B, F)),
            "bool": np.arange(T)[:, None] < np.array([5, 2, 0])[None, :]}[mask_kind]
    loss, d = nn.mse_loss(x, y, reduction, mask)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert_close(loss, reference(x, y, reduction, mask), atol=tol, rtol=tol, what="loss")
    assert d.dtype == dtype and d.shape == x.shape
    if reduction == "none":
        assert loss.dtype == dtype and loss.shape == x.shape
    # the gradient: d/dx of the reduced loss (of each element's own loss for 'none')
    w = np.ones_like(x, np.float64) if mask is None else np.broadcast_to(
        np.asarray(mask, np.float64)[..., None] if np.ndim(mask) == 2 else np.asarray(mask, np.float64), x.shape)
    scale = 1.0 / w.sum() if reduction == "mean" else 1.0
    assert_close(d, 2 * scale * w * (x.astype(np.float64) - y), atol=tol, rtol=tol, what="dinput")


@pytest.mark.parametrize("mask_kind", [None, "position", "element"])
def test_float64_gradient_check(mask_kind):
    rng = np.random.default_rng(1)
    x, y = _data(rng)
    mask = {None: None, "position": rng.uniform(0, 2, (T, B)), "element": rng.uniform(0, 2, (T, B, F))}[mask_kind]
    for reduction in ("mean", "sum"):
        _, d = nn.mse_loss(x, y, reduction, mask)
        num = numeric_grad(lambda: nn.mse_loss(x, y, reduction, mask, compute_grad=False)[0], x)
        assert np.abs(num).max() > 1e-3  # not vacuous
        assert_close(d, num, atol=1e-8, rtol=1e-6, what=f"dinput ({reduction})")


def test_class_form_backward_scales_and_is_used_once():
    rng = np.random.default_rng(2)
    x, y = _data(rng)
    crit = nn.MSELoss()
    loss = crit(x, y)
    assert abs(loss - reference(x, y, "mean")) < 1e-12
    np.testing.assert_allclose(crit.backward(3.0), 3 * 2 * (x - y) / x.size, rtol=1e-12)
    with pytest.raises(rnncore.NoForwardError):
        crit.backward()
    crit = nn.MSELoss(reduction="none")
    crit(x, y)
    g = rng.standard_normal(x.shape)
    np.testing.assert_allclose(crit.backward(g), g * 2 * (x - y), rtol=1e-12)
    assert repr(crit) == "MSELoss(reduction='none')"
    crit(x, y)
    with pytest.raises(ValueError, match="grad must be a scalar or have the input's shape"):
        crit.backward(np.ones(3))


def test_empty_mask_and_empty_input():
    x = np.ones((4, 2))
    loss, d = nn.mse_loss(x, np.zeros_like(x), mask=np.zeros(4))
    assert loss == 0.0 and not d.any()
    loss, d = nn.mse_loss(np.zeros((0, 3)), np.zeros((0, 3)))
    assert loss == 0.0 and d.shape == (0, 3)


def test_threads_do_not_change_the_result():
    rng = np.random.default_rng(3)
    x, y = _data(rng, np.float32, (400, 64, 8))
    one = nn.mse_loss(x, y, threads=1)
    two = nn.mse_loss(x, y, threads=2)
    assert one[0] == two[0]
    np.testing.assert_array_equal(one[1], two[1])
    assert _core.mse_loss(x, y, None, "mean", True, 1)[2] == x.size


def test_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x, y = _data(rng)
    for reduction in ("mean", "sum", "none"):
        tx = torch.tensor(x, requires_grad=True)
        tl = torch.nn.functional.mse_loss(tx, torch.tensor(y), reduction=reduction)
        loss, d = nn.mse_loss(x, y, reduction)
        assert_close(loss, tl.detach().numpy(), atol=1e-12, rtol=1e-12, what=f"loss ({reduction})")
        if reduction != "none":
            tl.backward()
            assert_close(d, tx.grad.numpy(), atol=1e-12, rtol=1e-12, what=f"dinput ({reduction})")


def test_bad_input_is_named():
    x = np.zeros((T, B, F))
    bad = x.copy()
    bad[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"mse_loss: input holds nan at position \[2, 1, 0\].*finite"):
        nn.mse_loss(bad, x)
    with pytest.raises(ValueError, match=r"mse_loss: target holds inf at position \[2, 1, 0\]"):
        nn.mse_loss(x, np.where(np.isnan(bad), np.inf, 0.0))
    with pytest.raises(ValueError, match=r"target must have the input's shape \(5, 3, 2\), got \(5, 3\)"):
        nn.mse_loss(x, x[..., 0])
    with pytest.raises(ValueError, match=r"mask must have the input's shape \(5, 3, 2\) or \(5, 3\)"):
        nn.mse_loss(x, x, mask=np.ones(5))
    with pytest.raises(ValueError, match=r"mask values must be finite and >= 0, got -1 at position \[0, 2\]"):
        m = np.ones((T, B))
        m[0, 2] = -1
        nn.mse_loss(x, x, mask=m)
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.mse_loss(x, x, "avg")
    with pytest.raises(ValueError, match="got a scalar"):
        nn.mse_loss(1.0, 1.0)
    with pytest.raises(TypeError, match="input must be a real numeric array"):
        nn.mse_loss(np.array(["a"]), np.array([1.0]))
    with pytest.raises(FloatingPointError, match="overflow"):
        nn.mse_loss(np.full(3, 1e200), np.zeros(3))
    # the core entry point refuses what the Python layer would have converted
    with pytest.raises((TypeError, ValueError), match="target"):
        _core.mse_loss(x, x.astype(np.float32))
    with pytest.raises(ValueError, match="mask must have the input's shape"):
        _core.mse_loss(x, x, np.ones((T, 1)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mask_is_checked_when_there_are_no_features(dtype):
    # F = 0: no element to weigh, yet the mask's shape, dtype and values are checked as for F > 0
    # (the values were not: the fused loop never reads a weight when there is no element)
    x = np.zeros((T, B, 0), dtype)
    crit = nn.MSELoss()
    for call in (lambda m: nn.mse_loss(x, x, mask=m)[0], lambda m: crit(x, x, m)):
        for m in (np.ones((T, B)), np.ones((T, B), bool), np.ones((T, B, 0)), np.zeros((T, B))):
            assert call(m) == 0.0
        with pytest.raises(ValueError, match=r"mask must have the input's shape \(5, 3, 0\) or \(5, 3\) "
                                             r"\(one weight per position\), got \(5, 4\)"):
            call(np.ones((T, B + 1)))
        with pytest.raises(ValueError, match=r"mask must have the input's shape \(5, 3, 0\) or \(5, 3\) "
                                             r"\(one weight per position\), got \(5, 3, 1\)"):
            call(np.ones((T, B, 1)))
        with pytest.raises(TypeError, match="mask must be a real numeric array"):
            call(np.full((T, B), "a"))
        for value, shown in ((-1.0, "-1"), (np.nan, "nan"), (np.inf, "inf")):
            m = np.ones((T, B))
            m[3, 1] = value
            with pytest.raises(ValueError, match=rf"mse_loss: mask values must be finite and >= 0, got {shown} "
                                                 r"at position \[3, 1\]"):
                call(m)
            # the kernel's own binding refuses it too (the check is there, not in the Python layer)
            m = m.astype(dtype)
            with pytest.raises(ValueError, match=rf"mse_loss: mask values must be finite and >= 0, got {shown} "
                                                 r"at position \[3, 1\]"):
                _core.mse_loss(x, x, m, "mean", True, 1)
    # the same message as with features
    m = np.ones((T, B))
    m[3, 1] = -1
    with pytest.raises(ValueError, match=r"mask values must be finite and >= 0, got -1 at position \[3, 1\]"):
        nn.mse_loss(np.zeros((T, B, 2), dtype), np.zeros((T, B, 2), dtype), mask=m)


def test_tiny_total_weight_gives_a_finite_gradient():
    # mean with total weight 1e-40 (a float32 subnormal): scale = 1e40 is past float32's range,
    # yet the gradient 2 * w * e / total = 2 * e is small; it must not come back inf or NaN
    x, y = np.array([1.0, 0.0], np.float32), np.zeros(2, np.float32)
    loss, d, total = _core.mse_loss(x, y, np.array([1e-40, 0.0], np.float32))
    assert total > 0 and abs(loss - 1.0) < 1e-5
    assert np.all(np.isfinite(d)), d
    np.testing.assert_allclose(d, [2.0, 0.0], rtol=1e-5)


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_gradient_overflow_raises(reduction):
    # w * e^2 = 3e38 fits float32, but the gradient 2 * w * e = 6e38 does not: FloatingPointError,
    # not a finite loss with an infinite gradient
    x, y, w = np.array([1.0], np.float32), np.zeros(1, np.float32), np.array([3e38], np.float32)
    with pytest.raises(FloatingPointError, match="mse_loss"):
        _core.mse_loss(x, y, w, reduction)
    assert np.isfinite(_core.mse_loss(x, y, w, reduction, False)[0])  # no gradient asked: nothing overflows
