"""bf16 mixed-precision training (issue 16): one LSTM/GRU layer's training step (forward + BPTT
backward, all gradients) in rnncore float32 and bf16, and in PyTorch float32 and bf16 (autocast on
the CPU, float32 master weights), same shapes. Each measurement runs in its own process, the
engines alternate over rounds, and the medians are printed as ms per step and as ratios to
rnncore bf16 (ratio > 1: that engine is slower).

    python bench/bf16_train.py                      # shapes a, b and the char-LSTM's, 2 and 1 threads
    python bench/bf16_train.py --rounds 5 --threads 2 --cell gru

Shapes (T, B, I, H): a (100, 64, 512, 512), b (100, 16, 256, 256), char (100, 32, 512, 512).
Also prints, once, the bf16 GEMM's rate against the float32 GEMM's at the layer's big products.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHAPES = {"a": (100, 64, 512, 512), "b": (100, 16, 256, 256), "char": (100, 32, 512, 512)}
ENGINES = ("rnncore-fp32", "rnncore-bf16", "torch-fp32", "torch-bf16")


def worker(engine, cell, shape, threads, reps):
    import numpy as np

    T, B, I, H = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    if engine.startswith("rnncore"):
        import rnncore
        from rnncore import nn

        rnncore.set_num_threads(threads)
        cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        layer = cls(I, H, seed=0, precision="bf16" if engine.endswith("bf16") else "fp32")

        def step():
            layer(x)
            layer.backward(dy)
    else:
        import torch

        torch.set_num_threads(threads)
        cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
        layer = cls(I, H)
        xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
        bf16 = engine.endswith("bf16")

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out, _ = layer(xt)
            out.float().backward(dyt)
    for _ in range(2):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_rates(threads):
    import numpy as np
    from rnncore import _core

    rng = np.random.default_rng(0)
    out = []
    for M, N, K, ta, tb, what in [(3200, 2048, 512, False, True, "X W_ih^T"), (2048, 512, 3200, True, False, "dG^T X"),
                                  (3200, 512, 2048, False, False, "dG W_ih")]:
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        c = np.empty((M, N), np.float32)
        rates = {}
        for name, f in (("fp32", lambda: _core.gemm(a, b, c, trans_a=ta, trans_b=tb, threads=threads)),
                        ("bf16", lambda: _core.gemm_bf16(a, b, ta, tb, threads=threads))):
            f()
            ts = []
            for _ in range(7):
                t0 = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t0)
            rates[name] = 2 * M * N * K / statistics.median(ts) / 1e9
        out.append((what, M, N, K, rates["fp32"], rates["bf16"]))
    return out


def host():
    model, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    fl = line.split(":", 1)[1].split()
                    flags = " ".join(x for x in fl if x.startswith(("avx512_bf16", "amx", "avx512_vnni", "avx2")))
                    break
    except OSError:
        pass
    return f"{model or 'unknown CPU'} ({os.cpu_count()} CPUs; {flags})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="a,b,char")
    ap.add_argument("--cell", default="lstm", choices=("lstm", "gru"))
    ap.add_argument("--threads", type=int, nargs="*", default=[2, 1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(worker(spec["engine"], spec["cell"], tuple(spec["shape"]), spec["threads"], spec["reps"])))
        return
    engines = args.engines.split(",")
    print(f"host: {host()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; cell {args.cell}")
    for th in args.threads:
        for what, M, N, K, f32, b16 in gemm_rates(th):
            print(f"  GEMM {what} ({M}x{N}x{K}), {th} thread(s): float32 {f32:.0f} GFLOP/s, bf16 {b16:.0f} GFLOP/s "
                  f"({b16 / f32:.2f}x)")
    for th in args.threads:
        for name in args.shapes.split(","):
            shape = SHAPES[name]
            times = {e: [] for e in engines}
            for _ in range(args.rounds):
                for e in engines:  # alternate the engines within each round
                    spec = json.dumps({"engine": e, "cell": args.cell, "shape": shape, "threads": th, "reps": args.reps})
                    r = subprocess.run([sys.executable, __file__, "--worker", spec], capture_output=True, text=True,
                                       cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS=str(th)))
                    if r.returncode != 0:
                        print(f"  {e}: failed: {r.stderr.strip().splitlines()[-1:]}")
                        continue
                    times[e].append(float(r.stdout.strip().splitlines()[-1]))
            med = {e: statistics.median(v) for e, v in times.items() if v}
            base = med.get("rnncore-bf16")
            cells = ", ".join(f"{e} {1e3 * t:.1f} ms" + (f" ({t / base:.2f})" if base else "") for e, t in med.items())
            print(f"shape {name} {shape}, {th} thread(s): {cells}")


if __name__ == "__main__":
    main()
