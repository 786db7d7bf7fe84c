"""The GEMM's cache blocks against the host's caches: time rnncore's sgemm under several
RNNCORE_CACHE_SIZES settings (each a separate process, the settings alternated round by round)
beside numpy's sgemm, medians in GFLOP/s.

    PYTHONPATH=. env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        python bench/gemm_blocks.py [--threads 1] [--rounds 4] [--sizes host 48K,221K,32M ...]

`host` is the detected caches (rnncore._core.gemm_config()); another value pretends the caches
are that big (L1D,L2,L3), which changes the derived blocks (kc from L1D, mc from L2, nc from L3).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

# (M, K, N, trans_a): the forward input projections of shapes a and b, the weight gradients
# (x^T @ dgates), a batch of 64 rows, and a square product.
SHAPES = [(2048, 2048, 2048, False), (6400, 512, 2048, False), (512, 6400, 2048, True),
          (1600, 256, 1024, False), (256, 1600, 1024, True), (64, 512, 2048, False)]


def _name(M, K, N, ta):
    return f"{M}x{K}x{N}{'T' if ta else ''}"


def _median_time(fn, budget=1.0):
    fn()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.15:
        fn()
        n += 1
    times = []
    for _ in range(max(5, 4 * n)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if sum(times) > budget:
            break
    return statistics.median(times)


def worker(engine, threads):
    """One process: GFLOP/s per shape for `engine` ("rnncore" or "numpy"), as one JSON line."""
    rng = np.random.default_rng(0)
    if engine == "numpy":
        from threadpoolctl import threadpool_limits
        limit = threadpool_limits(threads)
    else:
        from rnncore import _core
    out = {}
    for M, K, N, ta in SHAPES:
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = rng.standard_normal((K, N), dtype=np.float32)
        c = np.zeros((M, N), np.float32)
        if engine == "numpy":
            fn = (lambda: np.matmul(a.T, b, out=c)) if ta else (lambda: np.matmul(a, b, out=c))
        else:
            fn = lambda: _core.gemm(a, b, c, ta, False, 1.0, 0.0, threads)  # noqa: E731
        out[_name(M, K, N, ta)] = 2.0 * M * N * K / _median_time(fn) / 1e9
    cfg = None if engine == "numpy" else _core.gemm_config()["float32"]
    print(json.dumps({"cfg": cfg, "gf": out}))
    if engine == "numpy":
        limit.unregister() if hasattr(limit, "unregister") else None


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--sizes", nargs="+", default=["host", "48K,221K,32M", "48K,512K,32M"],
                   help="RNNCORE_CACHE_SIZES values to compare ('host' = detected)")
    p.add_argument("--worker", choices=["rnncore", "numpy"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.threads)
    results = {}
    for _ in range(args.rounds):
        for sizes in ["numpy"] + args.sizes:
            env = dict(os.environ)
            env.pop("RNNCORE_CACHE_SIZES", None)
            if sizes not in ("host", "numpy"):
                env["RNNCORE_CACHE_SIZES"] = sizes
            if sizes == "numpy":
                env.pop("OPENBLAS_CORETYPE", None)
                env.pop("OPENBLAS_L2_SIZE", None)
            engine = "numpy" if sizes == "numpy" else "rnncore"
            r = subprocess.run([sys.executable, __file__, "--worker", engine, "--threads", str(args.threads)],
                               env=env, capture_output=True, text=True, check=True)
            d = json.loads(r.stdout.strip().splitlines()[-1])
            label = "numpy sgemm" if d["cfg"] is None else (
                f"{sizes}: mc {d['cfg']['mc']} kc {d['cfg']['kc']} nc {d['cfg']['nc']}")
            for shape, gf in d["gf"].items():
                results.setdefault(label, {}).setdefault(shape, []).append(gf)
            time.sleep(0.2)
    shapes = [_name(*s) for s in SHAPES]
    print(f"threads {args.threads}, {args.rounds} rounds; GFLOP/s, median (best)")
    print(f"{'setting':>40} " + " ".join(f"{s:>16}" for s in shapes))
    for label, rows in results.items():
        print(f"{label:>40} " + " ".join(f"{statistics.median(rows[s]):8.1f} ({max(rows[s]):5.1f})" for s in shapes))


if __name__ == "__main__":
    main(sys.argv[1:])
