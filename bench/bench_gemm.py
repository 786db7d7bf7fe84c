"""GEMM benchmarks: rnncore's packed SIMD sgemm against numpy's (OpenBLAS) on the shapes
the engine cares about.

pytest-benchmark (timings only, nothing asserted about speed; each result checked once):

    PYTHONPATH=. env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        python -m pytest bench/bench_gemm.py --benchmark-only

Ratio table (same process, engines alternated, medians of many repetitions):

    PYTHONPATH=. env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_gemm.py [--quick]

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for the numpy side so OpenBLAS picks its
own kernel for this CPU. numpy's threads are set with threadpoolctl when it is installed,
otherwise by OPENBLAS_NUM_THREADS (then run once per thread count).
"""
import os
import sys
import time

import numpy as np
import pytest

from rnncore import _core

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # numpy's thread count then comes from OPENBLAS_NUM_THREADS
    threadpool_limits = None

# (M, K, N): C (M, N) = A (M, K) @ B (K, N), float32.
SHAPES = [
    (2048, 2048, 2048),  # square, compute bound
    (6400, 512, 2048),   # forward input projection: [T*B, I] x [I, G*H]
    (64, 512, 2048),     # one batch of rows
    (1, 512, 2048),      # GEMV
]
THREADS = [1, 2]


def _ids(shape):
    return "x".join(map(str, shape))


class _numpy_threads:
    def __init__(self, n):
        self.n = n
        self.ctx = None

    def __enter__(self):
        if threadpool_limits is not None:
            self.ctx = threadpool_limits(self.n)
            self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


def _operands(shape, seed=0):
    M, K, N = shape
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    return a, b


def _check(c, a, b):
    ref = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.sqrt(a.shape[1]) + 1.0
    assert np.abs(c - ref).max() <= 1e-5 * scale


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
@pytest.mark.parametrize("engine", ["rnncore", "numpy"])
def test_sgemm(benchmark, engine, shape, threads):
    a, b = _operands(shape)
    c = np.empty((shape[0], shape[2]), np.float32)
    if engine == "rnncore":
        def run():
            _core.gemm(a, b, c, False, False, 1.0, 0.0, threads)
    else:
        def run():
            np.matmul(a, b, out=c)
    with _numpy_threads(threads):
        run()
        _check(c, a, b)
        benchmark.extra_info["gflop"] = 2e-9 * shape[0] * shape[1] * shape[2]
        benchmark.extra_info["kernel"] = _core.gemm_kernel()
        benchmark(run)


# ---------------------------------------------------------------------------------------
# Standalone ratio table.

def _time(fn, reps, clock):
    out = []
    for _ in range(reps):
        t = clock()
        fn()
        out.append(clock() - t)
    return out


def compare(shape, threads, rounds=7, seconds_per_round=0.4, clock=time.perf_counter):
    """Seconds per call (median_rnncore, median_numpy, best_rnncore, best_numpy), alternating
    engines round by round."""
    a, b = _operands(shape)
    c1 = np.empty((shape[0], shape[2]), np.float32)
    c2 = np.empty_like(c1)
    ours = lambda: _core.gemm(a, b, c1, False, False, 1.0, 0.0, threads)  # noqa: E731
    theirs = lambda: np.matmul(a, b, out=c2)  # noqa: E731
    with _numpy_threads(threads):
        ours(), theirs()  # warm up (workspaces, thread pools, caches)
        _check(c1, a, b)
        t0 = time.perf_counter()
        theirs()
        reps = max(3, min(500, int(seconds_per_round / max(time.perf_counter() - t0, 1e-6))))
        t_ours, t_theirs = [], []
        for r in range(rounds):
            first, second = (ours, theirs) if r % 2 == 0 else (theirs, ours)
            t_first = _time(first, reps, clock)
            t_second = _time(second, reps, clock)
            if first is ours:
                t_ours += t_first
                t_theirs += t_second
            else:
                t_ours += t_second
                t_theirs += t_first
    return (float(np.median(t_ours)), float(np.median(t_theirs)), float(np.min(t_ours)),
            float(np.min(t_theirs)))


def main(argv):
    quick = "--quick" in argv
    rounds = 3 if quick else 9
    print(f"rnncore gemm kernel: {_core.gemm_kernel()}; numpy {np.__version__}; "
          f"threadpoolctl: {'yes' if threadpool_limits else 'no (OPENBLAS_NUM_THREADS)'}")
    print("GF/s from the median time per call (best-of in brackets); ratio = numpy time / rnncore time")
    print(f"{'shape MxKxN':>18} {'thr':>3} {'clock':>5} {'rnncore GF/s':>17} {'numpy GF/s':>17} "
          f"{'ratio':>6} {'(best)':>7}")
    for threads in THREADS:
        if threadpool_limits is None and str(threads) != os.environ.get("OPENBLAS_NUM_THREADS", ""):
            continue
        clocks = [("wall", time.perf_counter)]
        if threads == 1:  # both engines run in this thread: CPU time is robust to a busy machine
            clocks.append(("cpu", time.thread_time))
        for shape in SHAPES:
            for name, clock in clocks:
                ours, theirs, ours_best, theirs_best = compare(shape, threads, rounds=rounds, clock=clock)
                gf = 2e-9 * shape[0] * shape[1] * shape[2]
                print(f"{_ids(shape):>18} {threads:>3} {name:>5} {gf / ours:8.1f} ({gf / ours_best:6.1f}) "
                      f"{gf / theirs:8.1f} ({gf / theirs_best:6.1f}) {theirs / ours:6.3f} "
                      f"({theirs_best / ours_best:5.3f})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
