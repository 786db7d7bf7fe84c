"""The vectorised float32 activations meet the error bounds stated in csrc/common/vmath.h."""
import os
import subprocess
import sys

import numpy as np
import pytest

from rnncore import _core

# (function, float64 reference, max absolute error, max relative error) as stated in vmath.h
BOUNDS = [
    ("exp", np.exp, None, 2e-7),
    ("sigmoid", lambda v: 1.0 / (1.0 + np.exp(-v)), 1e-7, 3e-7),
    ("tanh", np.tanh, 2e-7, 4e-7),
]


def grid():
    wide = np.linspace(-100, 100, 400_001)
    near_zero = np.linspace(-2, 2, 400_001)
    tiny = np.geomspace(1e-30, 1e-3, 2_001)
    return np.concatenate([wide, near_zero, tiny, -tiny]).astype(np.float32)


def check_bounds(kernel_name):
    x = grid()
    xd = x.astype(np.float64)
    for fn, ref, abs_bound, rel_bound in BOUNDS:
        y = _core.vmath(fn, x).astype(np.float64)
        r = ref(xd)
        valid = (xd > -87.3) & (xd < 88.0) if fn == "exp" else np.ones(x.shape, bool)
        err = np.abs(y - r)[valid]
        measurable = np.abs(r[valid]) > 1e-30
        rel = err[measurable] / np.abs(r[valid][measurable])
        assert rel.max() <= rel_bound, f"{kernel_name} {fn}: relative error {rel.max():.3g}"
        if abs_bound is not None:
            assert err.max() <= abs_bound, f"{kernel_name} {fn}: absolute error {err.max():.3g}"


def test_error_bounds_hold_for_the_selected_kernel():
    check_bounds(_core.vmath_kernel())


def test_error_bounds_hold_for_the_portable_kernel():
    code = (
        "import sys; sys.path.insert(0, %r); import test_vmath as t; from rnncore import _core; "
        "assert _core.vmath_kernel() == 'generic'; t.check_bounds('generic')" % os.path.dirname(__file__)
    )
    env = dict(os.environ, RNNCORE_ISA="generic")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("fn", ["exp", "sigmoid", "tanh"])
def test_special_values(fn):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e6, -1e6], np.float32)
    y = _core.vmath(fn, x)
    assert np.isnan(y[0])
    expected = {"exp": [np.inf, 0.0, 1.0, 1.0, np.inf, 0.0],
                "sigmoid": [1.0, 0.0, 0.5, 0.5, 1.0, 0.0],
                "tanh": [1.0, -1.0, 0.0, 0.0, 1.0, -1.0]}[fn]
    if fn == "exp":  # inputs are clamped to [-87.3, 88]: huge values saturate to finite extremes
        assert y[1] > 1e38 and y[2] < 1e-37 and y[3] == 1.0 and y[4] == 1.0 and y[5] > 1e38 and y[6] < 1e-37
    else:
        np.testing.assert_allclose(y[1:], expected, atol=1e-37)


def test_result_does_not_depend_on_position_in_the_array():
    # The vector body and the masked tail compute the same function.
    rng = np.random.default_rng(0)
    x = rng.standard_normal(37).astype(np.float32) * 5
    for fn in ("exp", "sigmoid", "tanh"):
        whole = _core.vmath(fn, x)
        for start in range(1, 9):
            np.testing.assert_array_equal(_core.vmath(fn, x[start:]), whole[start:])
