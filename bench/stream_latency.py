"""Per-call latency of streaming inference: rnncore's Stream against layer.forward(x, hx), ONNX
Runtime (an LSTM graph built with onnx.helper, same weights, its state fed back through the
session) and PyTorch (torch.nn.LSTM, state carried), in the same run.

    python bench/stream_latency.py                       # both workloads, 1 and 2 threads
    python bench/stream_latency.py --workload step --threads 1 --rounds 3 --calls 1000

Workloads (T, B, I, H), one LSTM layer, the state carried from call to call:
  step   = (1, 1, 256, 256): one time step per call (the per-step latency target)
  chunk  = (50, 1, 64, 64): the streaming model, a 50-step chunk per call
Each engine runs in its own process (a worker started per round and thread count), engines
alternate round by round, each worker times `calls` calls after a warm-up one by one with
perf_counter_ns and reports their median; the table gives the median over rounds, in µs per
call, and the ratio to rnncore's stream. The first worker also checks that every engine's
outputs agree with rnncore's (float32, 1e-4).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's rnncore

WORKLOADS = {"step": (1, 1, 256, 256), "chunk": (50, 1, 64, 64)}
ENGINES = ("stream", "forward", "ort", "torch")
NAMES = {"stream": "rnncore Stream.feed", "forward": "rnncore LSTM.forward(x, hx)",
         "ort": "ONNX Runtime session.run", "torch": "PyTorch nn.LSTM"}


def weights(I, H, seed=0):
    """PyTorch-layout LSTM weights (i, f, g, o), U(-1/sqrt(H), 1/sqrt(H))."""
    import numpy as np

    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(H)
    u = lambda *s: rng.uniform(-k, k, s).astype(np.float32)  # noqa: E731
    return u(4 * H, I), u(4 * H, H), u(4 * H), u(4 * H)


def inputs(T, B, I, calls, seed=1):
    import numpy as np

    return np.random.default_rng(seed).standard_normal((calls, T, B, I)).astype(np.float32)


def onnx_lstm(I, H, w_ih, w_hh, b_ih, b_hh):
    """An ONNX LSTM node (gates i, o, f, c) with the weights as initializers; inputs X, h0, c0."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    order = [0, 3, 1, 2]  # ONNX i, o, f, c from PyTorch's i, f, g, o

    def reorder(a):
        return np.concatenate([a[g * H:(g + 1) * H] for g in order])

    W = reorder(w_ih)[None]
    R = reorder(w_hh)[None]
    Bb = np.concatenate([reorder(b_ih), reorder(b_hh)])[None]
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"), numpy_helper.from_array(Bb, "B")]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "c0"], ["Y", "Y_h", "Y_c"], hidden_size=H)
    graph = helper.make_graph(
        [node], "lstm",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I]),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "B", H]),
         helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "B", H])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "B", H]),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, "B", H]),
         helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [1, "B", H])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_engine(engine, T, B, I, H, threads):
    """A function run(x) -> output (T, B, H) that carries the state, for one engine."""
    import numpy as np

    w_ih, w_hh, b_ih, b_hh = weights(I, H)
    if engine in ("stream", "forward"):
        import rnncore

        lstm = rnncore.nn.LSTM(I, H, threads=threads)
        for p, a in zip(lstm.layer_parameters(0), (w_ih, w_hh, b_ih, b_hh)):
            p.data[...] = a
        lstm.eval()
        if engine == "stream":
            s = lstm.stream(batch_size=B, capacity=T, threads=threads)
            return s.feed, lambda: s.allocations
        state = [None]

        def run(x):
            y, state[0] = lstm.forward(x, state[0])
            return y
        return run, None
    if engine == "ort":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(onnx_lstm(I, H, w_ih, w_hh, b_ih, b_hh), opts, providers=["CPUExecutionProvider"])
        st = {"h0": np.zeros((1, B, H), np.float32), "c0": np.zeros((1, B, H), np.float32)}

        def run(x):
            y, h, c = sess.run(None, {"X": x, "h0": st["h0"], "c0": st["c0"]})
            st["h0"], st["c0"] = h, c
            return y[:, 0]
        return run, None
    if engine == "torch":
        import torch

        torch.set_num_threads(threads)
        lstm = torch.nn.LSTM(I, H)
        with torch.no_grad():
            for p, a in zip((lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0),
                            (w_ih, w_hh, b_ih, b_hh)):
                p.copy_(torch.from_numpy(a))
        st = [None]

        def run(x):
            with torch.inference_mode():
                y, st[0] = lstm(torch.from_numpy(x), st[0])
            return y.numpy()
        return run, None
    raise ValueError(engine)


def worker(args):
    import numpy as np

    T, B, I, H = WORKLOADS[args.workload]
    run, allocations = make_engine(args.engine, T, B, I, H, args.threads)
    xs = inputs(T, B, I, args.calls + args.warmup)
    out = {}
    if args.check:  # every engine's first outputs against rnncore's whole-sequence forward
        ref_run, _ = make_engine("forward", T, B, I, H, args.threads)
        err = 0.0
        for x in xs[:5]:
            err = max(err, float(np.abs(np.asarray(run(x)) - ref_run(x)).max()))
        out["max_abs_diff_vs_forward"] = err
        assert err < 1e-4, f"{args.engine} disagrees with rnncore's forward: {err}"
        run, allocations = make_engine(args.engine, T, B, I, H, args.threads)
    for x in xs[:args.warmup]:
        run(x)
    a0 = allocations() if allocations else None
    times = []
    clock = time.perf_counter_ns
    for x in xs[args.warmup:]:
        t0 = clock()
        run(x)
        times.append(clock() - t0)
    out["median_us"] = statistics.median(times) / 1e3
    out["p90_us"] = sorted(times)[int(0.9 * len(times))] / 1e3
    if allocations:
        out["allocations_during_timing"] = allocations() - a0
    print(json.dumps(out))


def host():
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name"))
        flags = next(l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags"))
        keep = [f for f in flags if f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16",
                                          "avx512_vnni", "amx_tile")]
        return f"{model}; {os.cpu_count()} CPUs; flags {' '.join(keep)}"
    except (OSError, StopIteration):
        return model


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS) + ["all"], default="all")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.threads = args.threads[0]
        worker(args)
        return
    loads = sorted(WORKLOADS) if args.workload == "all" else [args.workload]
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    results = {}
    for load in loads:
        for nt in args.threads:
            for r in range(args.rounds):
                order = args.engines if r % 2 == 0 else list(reversed(args.engines))
                for e in order:
                    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--engine", e, "--workload", load,
                           "--threads", str(nt), "--calls", str(args.calls), "--warmup", str(args.warmup)]
                    if r == 0:
                        cmd.append("--check")
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if proc.returncode != 0:
                        sys.exit(f"worker {e} failed:\n{proc.stderr}")
                    res = json.loads(proc.stdout.strip().splitlines()[-1])
                    results.setdefault((load, nt, e), []).append(res)
    print(f"host: {host()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.calls} calls per worker, "
          f"{args.rounds} rounds, median of per-round medians")
    for load in loads:
        T, B, I, H = WORKLOADS[load]
        print(f"\n{load} (T, B, I, H) = ({T}, {B}, {I}, {H}), LSTM, state carried")
        print("| engine | threads | µs per call | × rnncore Stream |")
        print("|---|---:|---:|---:|")
        for nt in args.threads:
            base = statistics.median(x["median_us"] for x in results[(load, nt, "stream")])
            for e in args.engines:
                rs = results[(load, nt, e)]
                med = statistics.median(x["median_us"] for x in rs)
                extra = ""
                if "allocations_during_timing" in rs[0]:
                    extra = f" (allocations while timed: {sum(x['allocations_during_timing'] for x in rs)})"
                print(f"| {NAMES[e]}{extra} | {nt} | {med:.1f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
