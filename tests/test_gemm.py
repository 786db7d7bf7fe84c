"""rnncore's GEMM (csrc/gemm) against numpy in float64.

Covers every transpose combination, awkward sizes (0, 1, 7, 33, 257, non-multiples of the
tile and cache blocks), alpha/beta (beta == 0 must not read C: C starts as NaN), leading
dimensions larger than the row length (through the gemm_strided_test hook), PackedB +
gemm_packed (gemm_packed_test), 1 vs 2 threads bit-identical, and every kernel set this
CPU can run, each forced by RNNCORE_ISA in a subprocess.
"""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from rnncore import _core
from helpers import assert_gemm_splits

KERNELS = ["generic", "avx2", "avx512"]  # in order of preference
TOL = {np.float32: 1e-5, np.float64: 1e-12}

# (M, N, K): awkward sizes, and some that cross the tile (6x16), KC (256) and MC blocks.
SHAPES = [
    (1, 1, 1), (1, 7, 33), (7, 1, 33), (33, 7, 1), (7, 33, 257), (257, 7, 33), (33, 257, 7),
    (1, 300, 70), (2, 300, 70), (70, 1, 300), (13, 17, 19), (64, 200, 513), (100, 130, 600),
    (300, 40, 300),  # tall and narrow: threads split the rows and share the packed B
]
EMPTY = [(0, 5, 3), (4, 0, 3), (4, 5, 0)]
# Shapes the tests below compare 1 thread against 2 on, bit for bit, that do run on 2 threads:
# SHAPES' larger ones, test_gemm_threads_identical_large's, and the one of the forced-kernel
# child (_CHILD) that splits. Smaller shapes run on one thread whatever is asked.
LARGE = [((400, 40, 600), False, True), ((150, 4100, 300), True, False),
         ((1, 5000, 300), False, False), ((1, 5000, 300), True, True)]
SPLIT = [(64, 200, 513), (100, 130, 600), (300, 40, 300)] + [s for s, _, _ in LARGE] + [(50, 45, 270)]


def _op(x, t):
    return x.T if t else x


def _operands(rng, M, N, K, ta, tb, dtype):
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    return a, b


def _reference(a, b, ta, tb, alpha, beta, c0):
    ref = alpha * (_op(a, ta).astype(np.float64) @ _op(b, tb).astype(np.float64))
    if beta != 0:
        ref = ref + beta * c0.astype(np.float64)
    return ref


def _assert_close(c, ref, K, dtype):
    # Error relative to the scale of the products: |a||b| ~ sqrt(K) for unit normals.
    assert np.isfinite(c).all()
    if c.size:
        err = np.abs(c.astype(np.float64) - ref).max() / (np.sqrt(max(K, 1)) + 1.0)
        assert err <= TOL[dtype], err


def _c0(rng, M, N, dtype, beta):
    c = rng.standard_normal((M, N)).astype(dtype)
    if beta == 0:
        c[...] = np.nan  # must not be read
    return c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
def test_gemm_matches_numpy(dtype, ta, tb):
    rng = np.random.default_rng(1)
    for (M, N, K), (alpha, beta) in itertools.product(SHAPES, [(1.0, 0.0), (0.5, 2.0), (-1.0, 1.0)]):
        a, b = _operands(rng, M, N, K, ta, tb, dtype)
        c0 = _c0(rng, M, N, dtype, beta)
        ref = _reference(a, b, ta, tb, alpha, beta, c0)
        results = []
        for threads in (1, 2):
            c = c0.copy()
            _core.gemm(a, b, c, ta, tb, alpha, beta, threads)
            _assert_close(c, ref, K, dtype)
            results.append(c)
        np.testing.assert_array_equal(results[0], results[1])  # thread count never changes a bit


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_empty_and_degenerate(dtype):
    rng = np.random.default_rng(2)
    for M, N, K in EMPTY:
        for beta in (0.0, 1.5):
            a, b = _operands(rng, M, N, K, False, False, dtype)
            c0 = _c0(rng, M, N, dtype, beta)
            c = c0.copy()
            _core.gemm(a, b, c, False, False, 1.0, beta, 2)
            expect = np.zeros((M, N)) if beta == 0 else beta * c0.astype(np.float64)
            np.testing.assert_allclose(c, expect, rtol=TOL[dtype])
    # alpha == 0: C = beta * C, the product is not formed.
    a, b = _operands(rng, 5, 6, 7, False, False, dtype)
    c0 = rng.standard_normal((5, 6)).astype(dtype)
    c = c0.copy()
    _core.gemm(a, b, c, False, False, 0.0, 3.0, 1)
    np.testing.assert_allclose(c, 3.0 * c0.astype(np.float64), rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_threads_identical_large(dtype):
    # Crosses MC, KC and NC (4096) blocks; row split (tall) and column split (wide).
    rng = np.random.default_rng(3)
    for (M, N, K), ta, tb in LARGE:
        a, b = _operands(rng, M, N, K, ta, tb, dtype)
        c1 = np.full((M, N), np.nan, dtype)
        c2 = np.full((M, N), np.nan, dtype)
        _core.gemm(a, b, c1, ta, tb, 1.0, 0.0, 1)
        _core.gemm(a, b, c2, ta, tb, 1.0, 0.0, 2)
        np.testing.assert_array_equal(c1, c2)
        _assert_close(c1, _reference(a, b, ta, tb, 1.0, 0.0, c1), K, dtype)


@pytest.mark.parametrize("shape", SPLIT, ids=lambda s: "x".join(map(str, s)))
def test_two_thread_cases_split(shape):
    assert_gemm_splits(*shape)


def _strided(rng, shape, dtype, pad, fill=None):
    """A (rows, cols) view into a wider array: row stride cols + pad elements."""
    rows, cols = shape
    big = rng.standard_normal((rows, cols + pad)).astype(dtype)
    if fill is not None:
        big[...] = fill
    return big, big[:, :cols]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_leading_dimensions(dtype):
    rng = np.random.default_rng(4)
    for (M, N, K), ta, tb in itertools.product([(1, 33, 7), (7, 33, 257), (40, 17, 300)],
                                               [False, True], [False, True]):
        _, a = _strided(rng, (K, M) if ta else (M, K), dtype, 5)
        _, b = _strided(rng, (N, K) if tb else (K, N), dtype, 3)
        for beta in (0.0, 0.5):
            big_c, c = _strided(rng, (M, N), dtype, 4, fill=np.nan if beta == 0 else None)
            guard = big_c[:, N:].copy()
            c0 = c.copy()
            ref = _reference(a, b, ta, tb, 2.0, beta, c0)
            _core.gemm_strided_test(a, b, c, ta, tb, 2.0, beta, 2)
            _assert_close(c, ref, K, dtype)
            np.testing.assert_array_equal(big_c[:, N:], guard)  # padding between rows untouched


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tb", [False, True])
def test_gemm_packed(dtype, tb):
    rng = np.random.default_rng(5)
    # M = batch (1..64 and beyond), K = H, N = G*H/threads; K crosses KC, N the tile width.
    for M, N, K in [(1, 8, 1), (1, 48, 64), (2, 100, 33), (5, 40, 257), (7, 64, 300), (33, 24, 7),
                    (64, 136, 520), (100, 17, 60)]:
        _, a = _strided(rng, (M, K), dtype, 3)
        _, b = _strided(rng, (N, K) if tb else (K, N), dtype, 2)
        for beta in (0.0, 1.0, 0.5):
            big_c, c = _strided(rng, (M, N), dtype, 6, fill=np.nan if beta == 0 else None)
            guard = big_c[:, N:].copy()
            c0 = c.copy()
            _core.gemm_packed_test(a, b, tb, beta, c)
            _assert_close(c, _reference(a, b, False, tb, 1.0, beta, c0), K, dtype)
            np.testing.assert_array_equal(big_c[:, N:], guard)
    # K == 0: C = beta * C.
    c = np.ones((3, 4), dtype)
    _core.gemm_packed_test(np.zeros((3, 0), dtype), np.zeros((0, 4), dtype), False, 2.0, c)
    np.testing.assert_array_equal(c, 2.0)


def test_kernel_name():
    assert _core.gemm_kernel() in KERNELS


# Run in a child process with RNNCORE_ISA set (the choice is made once per process).
_CHILD = r"""
import itertools, sys
import numpy as np
from rnncore import _core
rng = np.random.default_rng(6)
worst = 0.0
for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
    for (M, N, K), ta, tb in itertools.product(
            [(1, 40, 33), (7, 33, 257), (33, 7, 300), (6, 16, 8), (13, 70, 9), (50, 45, 270)],
            [False, True], [False, True]):
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
        ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
        outs = []
        for threads in (1, 2):
            c = np.full((M, N), np.nan, dtype)
            _core.gemm(a, b, c, ta, tb, 1.0, 0.0, threads)
            outs.append(c)
        assert np.array_equal(outs[0], outs[1]), "threads differ"
        worst = max(worst, np.abs(outs[0] - ref).max() / (np.sqrt(K) + 1) / tol)
        if not ta:
            c = np.full((M, N), np.nan, dtype)
            _core.gemm_packed_test(a, b, tb, 0.0, c)
            worst = max(worst, np.abs(c - ref).max() / (np.sqrt(K) + 1) / tol)
assert worst <= 1.0, worst
print(_core.gemm_kernel())
"""


def _child_env(kernel):
    env = dict(os.environ)
    env.pop("RNNCORE_ISA", None)
    if kernel is not None:
        env["RNNCORE_ISA"] = kernel
    import rnncore
    root = os.path.dirname(os.path.dirname(os.path.abspath(rnncore.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _run_child(kernel):
    r = subprocess.run([sys.executable, "-c", _CHILD], env=_child_env(kernel), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_every_available_kernel():
    best = _run_child(None)  # automatic choice: the best the CPU supports
    assert best in KERNELS
    assert best == _core.supported_isas()[-1]
    for kernel in KERNELS:
        got = _run_child(kernel)
        # A request above what the CPU supports is clamped to the best supported kernel.
        expect = kernel if KERNELS.index(kernel) <= KERNELS.index(best) else best
        assert got == expect


# -- cache blocks derived from the host's caches (kernels.h: blocks_for_caches) ---------------

def _config_child(cache_sizes, kernel=None, check=False):
    """gemm_config() of a child process with RNNCORE_CACHE_SIZES (and RNNCORE_ISA) set; with
    check, the child also runs the correctness sweep of _CHILD under those blocks."""
    env = _child_env(kernel)
    env.pop("RNNCORE_CACHE_SIZES", None)
    if cache_sizes is not None:
        env["RNNCORE_CACHE_SIZES"] = cache_sizes
    code = "import json; from rnncore import _core\n" + (_CHILD if check else "")
    code += "\nprint(json.dumps(_core.gemm_config()))\n"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    import json
    return json.loads(r.stdout.strip().splitlines()[-1])


def _check_blocks(cfg, l1d, l2):
    for dtype, elem in (("float32", 4), ("float64", 8)):
        b = cfg[dtype]
        assert b["mc"] % b["mr"] == 0 and b["nc"] % b["nr"] == 0 and b["kc"] % 16 == 0, b
        if b["kernel"] == "generic":
            continue  # fixed blocks
        # The B micro-panel fits half of L1d (unless clamped up to 64), the A block a quarter of L2.
        assert b["kc"] * b["nr"] * elem <= l1d // 2 or b["kc"] == 64, (dtype, b)
        assert b["mc"] * b["kc"] * elem <= l2 // 4 or b["mc"] == b["mr"], (dtype, b)
        assert 64 <= b["kc"] <= 512 and b["mr"] <= b["mc"] <= 1024 and 16 * b["nr"] <= b["nc"] <= 4096, b


def test_gemm_config_reports_host_caches():
    cfg = _core.gemm_config()
    caches = cfg["caches"]
    assert caches["source"] in ("env", "sysconf", "cpuid", "default")
    assert caches["l1d"] > 0 and caches["l2"] >= caches["l1d"] and caches["l3"] > 0
    assert cfg["float32"]["kernel"] == _core.gemm_kernel()
    _check_blocks(cfg, caches["l1d"], caches["l2"])


@pytest.mark.parametrize("sizes, l1d, l2", [
    ("32K,512K,8M", 32 << 10, 512 << 10),
    ("48K,2M,260M", 48 << 10, 2 << 20),
    ("4096,65536,1M", 4096, 65536),  # tiny caches: clamped blocks, many K and M blocks
])
def test_blocks_follow_cache_sizes(sizes, l1d, l2):
    cfg = _config_child(sizes)
    assert cfg["caches"] == {"l1d": l1d, "l2": l2, "l3": cfg["caches"]["l3"], "source": "env"}
    _check_blocks(cfg, l1d, l2)


def test_larger_caches_give_larger_blocks():
    small, large = _config_child("32K,512K,8M"), _config_child("64K,2M,64M")
    if small["float32"]["kernel"] == "generic":
        pytest.skip("the generic kernel set keeps fixed blocks")
    for dtype in ("float32", "float64"):
        assert large[dtype]["kc"] > small[dtype]["kc"], (small[dtype], large[dtype])
        assert large[dtype]["mc"] > small[dtype]["mc"], (small[dtype], large[dtype])


@pytest.mark.parametrize("sizes", ["", "32K", "32K,512K", "0,1M,8M", "-1,1M,8M", "32Q,1M,8M", "32K,1M,8M,"])
def test_malformed_cache_sizes_are_ignored(sizes):
    cfg = _config_child(sizes)
    assert cfg["caches"]["source"] != "env"


@pytest.mark.parametrize("kernel", ["avx2", "avx512"])
def test_every_kernel_correct_under_tiny_blocks(kernel):
    """Tiny caches force the smallest blocks (kc 64, mc = MR): every K-block and M-block edge of
    the correctness sweep is crossed, on each SIMD kernel set the host runs."""
    if kernel not in _core.supported_isas():
        pytest.skip(f"this CPU cannot run {kernel}")
    cfg = _config_child("4096,8192,65536", kernel=kernel, check=True)
    assert cfg["float32"]["kernel"] == kernel
    assert cfg["float32"]["kc"] == 64 and cfg["float32"]["mc"] == cfg["float32"]["mr"]
