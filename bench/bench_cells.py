"""One cell step on each instruction-set path this host runs: the fused float32 kernels of
cells/fused_avx512.cpp and fused_avx2.cpp against the portable loops (generic), forward and
backward, through _core.cell_forward_test / cell_backward_test (repeat > 1: the median time of
one step over all B rows; the in-place inputs are restored outside the timed region).

    python bench/bench_cells.py                          # H = 256, 512; B = 1, 16, 64; 5 rounds
    python bench/bench_cells.py --layers                 # layer level: compare.py's b and c shapes
    python -m pytest bench/bench_cells.py                # smoke test (checks results, no timing)

Each path runs in its own process (RNNCORE_ISA=<isa>, so 'generic' is exactly what a generic
process runs, scalar activations included); the processes alternate round by round and the table
quotes medians over rounds. Nothing here asserts a time.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
G = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
LAYER_SHAPES = {"b": (100, 16, 256, 256), "c": (100, 1, 256, 256)}  # (T, B, I, H) as in bench/compare.py


def cell_inputs(cell, B, H, rng):
    g = G[cell]
    fwd = {"gates": rng.standard_normal((B, g * H)), "hg": rng.standard_normal((B, g * H)),
           "h_prev": rng.standard_normal((B, H)), "bias": rng.standard_normal(g * H)}
    if cell == "lstm":
        fwd["c_prev"] = rng.standard_normal((B, H))
    if cell == "gru":
        fwd["b_hn"] = rng.standard_normal(H)
    bwd = {"gates": rng.uniform(0.05, 0.95, (B, g * H)), "h_prev": rng.standard_normal((B, H)),
           "h": rng.uniform(-0.95, 0.95, (B, H)), "dh_carry": rng.standard_normal((B, H)),
           "dy": rng.standard_normal((B, H))}
    if cell == "lstm":
        bwd.update(c_prev=rng.standard_normal((B, H)), c=rng.standard_normal((B, H)), dc=rng.standard_normal((B, H)))
    if cell == "gru":
        bwd["hn"] = rng.standard_normal((B, H))
    f32 = lambda d: {k: v.astype(np.float32) for k, v in d.items()}
    return f32(fwd), f32(bwd)


def time_cells(cells, Hs, Bs, repeat):
    """{key: seconds per step} on this process's kernels."""
    from rnncore import _core
    rng = np.random.default_rng(0)
    out = {}
    for cell in cells:
        for H in Hs:
            for B in Bs:
                fwd, bwd = cell_inputs(cell, B, H, rng)
                out[f"{cell} {H} {B} fwd"] = _core.cell_forward_test(cell, **fwd, repeat=repeat)["seconds"]
                out[f"{cell} {H} {B} bwd"] = _core.cell_backward_test(cell, **bwd, repeat=repeat)["seconds"]
    return out


def time_layers(cells, shapes, threads, reps):
    from rnncore.nn import GRU, LSTM, RNN
    cls = {"lstm": LSTM, "gru": GRU, "rnn_tanh": RNN, "rnn_relu": lambda *a, **k: RNN(*a, nonlinearity="relu", **k)}
    out = {}
    for cell in cells:
        for shape in shapes:
            T, B, I, H = LAYER_SHAPES[shape]
            rng = np.random.default_rng(0)
            layer = cls[cell](I, H, seed=0, threads=threads)
            x = rng.standard_normal((T, B, I), dtype=np.float32)
            dy = rng.standard_normal((T, B, H), dtype=np.float32)
            for mode in ("fwd", "train"):
                def step():
                    if mode == "train":
                        layer.zero_grad()
                    layer(x)
                    if mode == "train":
                        layer.backward(dy)
                step()
                ts = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    step()
                    ts.append(time.perf_counter() - t0)
                out[f"{cell} {shape} {mode}"] = min(ts)
    return out


def child(args):
    from rnncore import _core
    if args.layers:
        res = time_layers(args.cells, args.shapes, args.threads, args.reps)
    else:
        res = time_cells(args.cells, args.H, args.B, args.repeat)
    print(json.dumps({"isa": _core.isa(), "times": res}))


def host():
    model, flags = "unknown", []
    try:
        info = open("/proc/cpuinfo").read()
        model = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name"))
        have = set(next(l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")))
        flags = [f for f in ("avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl", "amx_tile") if f in have]
    except (OSError, StopIteration):
        pass
    return f"{model} ({', '.join(flags)}), {os.cpu_count()} CPUs"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--isas", nargs="+", help="paths to run (default: every one this CPU supports)")
    ap.add_argument("--cells", nargs="+", default=None)
    ap.add_argument("--H", nargs="+", type=int, default=[256, 512])
    ap.add_argument("--B", nargs="+", type=int, default=[1, 16, 64])
    ap.add_argument("--repeat", type=int, default=2000, help="timed steps per shape and round (median taken)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--layers", action="store_true", help="time whole layers (forward, training step) instead")
    ap.add_argument("--shapes", nargs="+", default=list(LAYER_SHAPES), choices=list(LAYER_SHAPES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5, help="--layers: timed calls per round (the fastest is kept)")
    args = ap.parse_args()
    if args.cells is None:
        args.cells = ["lstm", "gru"] if args.layers else list(G)
    if args.child:
        child(args)
        return
    from rnncore import _core
    isas = args.isas or _core.supported_isas()
    if args.layers and not args.isas:
        isas = [i for i in isas if i != "generic"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    passthrough = [a for i, a in enumerate(sys.argv[1:]) if not _is_isa_arg(sys.argv[1:], i)]
    runs = {isa: [] for isa in isas}
    for r in range(args.rounds):
        order = isas if r % 2 == 0 else isas[::-1]
        for isa in order:
            p = subprocess.run([sys.executable, __file__, "--child"] + passthrough, capture_output=True, text=True,
                               env=dict(env, RNNCORE_ISA=isa), check=True)
            got = json.loads(p.stdout.strip().splitlines()[-1])
            assert got["isa"] == isa, (isa, got["isa"])
            runs[isa].append(got["times"])
    keys = list(runs[isas[0]][0])
    unit, scale = ("ms", 1e3) if args.layers else ("µs", 1e6)
    print(f"host: {host()}; threads {args.threads if args.layers else 1}; {args.rounds} rounds, medians")
    cols = [f"{i} {unit}" for i in isas] + [f"{a}/{b}" for a, b in _pairs(isas)]
    print("| " + ("workload" if args.layers else "cell H B dir") + " | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for k in keys:
        med = {i: statistics.median(t[k] for t in runs[i]) for i in isas}
        cells = [f"{scale * med[i]:.2f}" if args.layers else f"{scale * med[i]:.3f}" for i in isas]
        cells += [f"{med[a] / med[b]:.2f}x" for a, b in _pairs(isas)]
        print(f"| {k} | " + " | ".join(cells) + " |")

def _pairs(isas):
    """(slower, faster) ratio columns: each path against the next one up."""
    return [(isas[i], isas[i + 1]) for i in range(len(isas) - 1)]


def _is_isa_arg(argv, i):
    """argv[i] belongs to --isas (the flag or one of its values)."""
    if argv[i].startswith("--"):
        return argv[i] == "--isas"
    j = i
    while j > 0 and not argv[j - 1].startswith("--"):
        j -= 1
    return j > 0 and argv[j - 1] == "--isas"


# -- smoke test (pytest bench/): each path's result checked against the portable loops once -------

def test_cell_step_smoke():
    from rnncore import _core
    rng = np.random.default_rng(1)
    for cell in G:
        fwd, bwd = cell_inputs(cell, 3, 37, rng)
        ref_f = _core.cell_forward_test(cell, **fwd, kernel="generic")
        ref_b = _core.cell_backward_test(cell, **bwd, kernel="generic")
        for isa in _core.supported_isas():
            f = _core.cell_forward_test(cell, **fwd, kernel=isa, repeat=3)
            b = _core.cell_backward_test(cell, **bwd, kernel=isa, repeat=3)
            np.testing.assert_allclose(f["h"], ref_f["h"], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(b["gates"], ref_b["gates"], rtol=1e-5, atol=1e-6)
            assert f["seconds"] > 0 and b["seconds"] > 0


if __name__ == "__main__":
    main()
