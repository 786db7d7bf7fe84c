"""Side-by-side benchmark: rnncore against PyTorch (and numpy's sgemm) in the same run.

    python bench/compare.py                      # every workload, 1 and 2 threads
    python bench/compare.py --quick              # a few small workloads (smoke test)
    python bench/compare.py --only lstm --threads 2 --record
    python bench/compare.py --quick --baseline /tmp/old   # this build against another checkout, same run

This machine is shared and its speed drifts, so each engine runs in its own long-lived
worker process, the engines alternate round by round on every workload, and the table
quotes medians. The machine's own sgemm throughput (numpy matmul at 2048^3, same thread
count, OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset for that worker only) is measured in the
same run and gives the "% sgemm" column.

Workloads (T, B, I, H): a = (100, 64, 512, 512), b = (100, 16, 256, 256),
c = (100, 1, 256, 256), d = 2 layers (50, 32, 128, 1024); cells lstm, gru, rnn_tanh;
modes fwd (inference) and train (forward + backward); GEMM shapes M x K x N; variable
lengths (uniform in [10, 100] at T = 100) against the padded run; a char-LM (Embedding
65 -> 128, 2 x LSTM 512, Linear 512 -> 65) sampling 200 tokens at temperature 1 with 1 and 64
streams (PyTorch: the usual Python loop), and training it (B = 32, T = 128, Adam, clip 5).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1}
SHAPES = {  # name: (T, B, I, H, layers)
    "a": (100, 64, 512, 512, 1),
    "b": (100, 16, 256, 256, 1),
    "c": (100, 1, 256, 256, 1),
    "d": (50, 32, 128, 1024, 2),
}
# The char-LM of the generation and training workloads: Embedding 65 -> 128, 2 x LSTM 512, Linear 512 -> 65.
CHARLM = {"V": 65, "E": 128, "H": 512, "L": 2}
CHARLM_MACS = 4 * 512 * (128 + 512) + 4 * 512 * (512 + 512) + 65 * 512  # per token
GEMMS = {"2048^3": (2048, 2048, 2048), "6400x512x2048": (6400, 512, 2048), "64x512x2048": (64, 512, 2048),
         "1x512x2048": (1, 512, 2048)}


# --------------------------------------------------------------------------------------------
# Workloads: each is (name, kind, params, flop count); workers build and time them.
# --------------------------------------------------------------------------------------------
def rnn_flops(cell, T, B, I, H, layers, mode):
    G = GATES[cell]
    fwd = sum(2.0 * T * B * ((I if l == 0 else H) + H) * G * H for l in range(layers))
    return fwd if mode == "fwd" else 3.0 * fwd


def workloads(args):
    out = []
    if "gemm" in args.only:
        for name, (M, K, N) in GEMMS.items():
            out.append({"name": f"gemm {name}", "kind": "gemm", "M": M, "K": K, "N": N, "flops": 2.0 * M * K * N})
    for cell in ("lstm", "gru", "rnn_tanh"):
        if cell not in args.only:
            continue
        for shape in args.shapes:
            T, B, I, H, layers = SHAPES[shape]
            for mode in args.modes:
                out.append({"name": f"{cell} {shape} {mode}", "kind": "rnn", "cell": cell, "T": T, "B": B, "I": I,
                            "H": H, "layers": layers, "mode": mode,
                            "flops": rnn_flops(cell, T, B, I, H, layers, mode)})
    if "varlen" in args.only:
        T, B, I, H, layers = SHAPES["a"]
        for ragged in (False, True):
            out.append({"name": f"lstm a train {'lengths~U[10,100]' if ragged else 'padded'}", "kind": "rnn",
                        "cell": "lstm", "T": T, "B": B, "I": I, "H": H, "layers": 1, "mode": "train",
                        "ragged": ragged, "flops": rnn_flops("lstm", T, B, I, H, 1, "train")})
    if "gen" in args.only:
        for streams in (1, 64):
            out.append({"name": f"charlm sample B={streams}", "kind": "gen", "streams": streams, "new_tokens": 200,
                        "tokens": 200 * streams, "flops": 2.0 * 200 * streams * CHARLM_MACS})
    if "lmtrain" in args.only:
        T, B = 128, 32
        out.append({"name": "charlm train B=32 T=128 adam", "kind": "lmtrain", "T": T, "B": B, "tokens": T * B,
                    "flops": 6.0 * T * B * CHARLM_MACS})
    if args.quick:
        keep = {"gemm 64x512x2048", "lstm b fwd", "lstm b train", "gru c fwd", "rnn_tanh b train",
                "charlm sample B=1"}
        out = [w for w in out if w["name"] in keep]
    return out


def lengths_for(w):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(10, w["T"] + 1, size=w["B"]).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Workers: `python compare.py --serve ENGINE` reads JSON requests on stdin, answers on stdout.
# --------------------------------------------------------------------------------------------
def build_rnncore(w, threads):
    import numpy as np

    import rnncore
    from rnncore import _core, nn

    rng = np.random.default_rng(0)
    if w["kind"] in ("gen", "lmtrain"):
        return build_rnncore_lm(w, threads)
    if w["kind"] == "gemm":
        a = rng.standard_normal((w["M"], w["K"]), dtype=np.float32)
        b = rng.standard_normal((w["K"], w["N"]), dtype=np.float32)
        c = np.empty((w["M"], w["N"]), np.float32)
        return lambda: _core.gemm(a, b, c, threads=threads)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN}[w["cell"]]
    layer = cls(w["I"], w["H"], num_layers=w["layers"], seed=0, threads=threads)
    x = rng.standard_normal((w["T"], w["B"], w["I"]), dtype=np.float32)
    lengths = lengths_for(w) if w.get("ragged") else None
    if w["mode"] == "fwd":
        layer.eval()
        return lambda: layer(x, lengths=lengths)
    dy = rng.standard_normal((w["T"], w["B"], w["H"]), dtype=np.float32)

    def train_step():
        layer(x, lengths=lengths)
        layer.backward(dy)

    return train_step


def build_rnncore_lm(w, threads):
    import numpy as np

    from rnncore import optim, sampling
    from rnncore.nn import LanguageModel

    c = CHARLM
    model = LanguageModel(c["V"], c["E"], c["H"], num_layers=c["L"], seed=0, threads=threads)
    rng = np.random.default_rng(0)
    if w["kind"] == "gen":
        model.eval()
        prime = rng.integers(0, c["V"], size=(w["streams"], 1))
        return lambda: sampling.generate(model, prime, w["new_tokens"], temperature=1.0, seed=1, threads=threads)
    opt = optim.Adam(model.parameters(), lr=2e-3, threads=threads)
    tokens = rng.integers(0, c["V"], size=(w["T"] + 1, w["B"]))
    state = [None]

    def train_step():
        loss, new_state = model.loss(tokens[:-1], tokens[1:], state[0])
        model.zero_grad()
        model.backward()
        optim.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        state[0] = new_state

    return train_step


def build_torch_lm(w, threads):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    c = CHARLM

    class CharLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Embedding(c["V"], c["E"])
            self.rnn = torch.nn.LSTM(c["E"], c["H"], num_layers=c["L"])
            self.decoder = torch.nn.Linear(c["H"], c["V"])

        def forward(self, x, state=None):
            out, state = self.rnn(self.encoder(x), state)
            return self.decoder(out), state

    model = CharLM()
    if w["kind"] == "gen":
        model.eval()
        g = torch.Generator().manual_seed(1)
        prime = torch.randint(0, c["V"], (1, w["streams"]), generator=g)

        def sample():  # the usual Python loop, one token per iteration
            with torch.inference_mode():
                x, state, out = prime, None, []
                for _ in range(w["new_tokens"]):
                    logits, state = model(x, state)
                    probs = torch.softmax(logits[-1], dim=-1)
                    x = torch.multinomial(probs, 1, generator=g).T
                    out.append(x)
                return torch.cat(out)

        return sample
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    tokens = torch.randint(0, c["V"], (w["T"] + 1, w["B"]))
    state = [None]

    def train_step():
        logits, new_state = model(tokens[:-1], state[0])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c["V"]), tokens[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        state[0] = tuple(s.detach() for s in new_state)

    return train_step


def build_torch(w, threads):
    import numpy as np
    import torch

    if w["kind"] in ("gen", "lmtrain"):
        return build_torch_lm(w, threads)
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    if w["kind"] == "gemm":
        raise SystemExit("gemm workloads compare against numpy, not torch")
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}[w["cell"]]
    layer = cls(w["I"], w["H"], num_layers=w["layers"])
    x = torch.randn(w["T"], w["B"], w["I"], generator=g)
    inp = x
    if w.get("ragged"):
        lengths = torch.from_numpy(lengths_for(w))
        inp = None
    if w["mode"] == "fwd":
        def fwd():
            with torch.inference_mode():
                if w.get("ragged"):
                    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
                    return layer(packed)
                return layer(inp)
        return fwd
    x.requires_grad_(True)
    dy = torch.randn(w["T"], w["B"], w["H"], generator=g)

    def train_step():
        layer.zero_grad(set_to_none=False)
        if w.get("ragged"):
            packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
            out, _ = layer(packed)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=w["T"])
        else:
            out, _ = layer(x)
        out.backward(dy)

    _ = np  # numpy is imported for parity with the other builders
    return train_step


def build_numpy(w, threads):
    import numpy as np

    # This worker was started with OPENBLAS_NUM_THREADS = threads (see Worker).
    rng = np.random.default_rng(0)
    M, K, N = (w["M"], w["K"], w["N"]) if w["kind"] == "gemm" else (2048, 2048, 2048)
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)
    c = np.empty((M, N), np.float32)
    return lambda: np.matmul(a, b, out=c)


def time_it(fn, reps, min_seconds=0.3):
    fn()  # warm up: allocations, packing, thread pools
    times = []
    start = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - start < min_seconds and len(times) < 50 * reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def serve(engine):
    builders = {"rnncore": build_rnncore, "torch": build_torch, "numpy": build_numpy}
    cache = {}
    for line in sys.stdin:
        req = json.loads(line)
        key = (json.dumps(req["workload"], sort_keys=True), req["threads"])
        try:
            if key not in cache:
                cache.clear()
                cache[key] = builders[engine](req["workload"], req["threads"])
            seconds = time_it(cache[key], req["reps"])
            reply = {"seconds": seconds}
        except Exception as exc:  # report, keep serving
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


ROOT = os.path.dirname(HERE)


def built_in_place(root):
    rn = os.path.join(root, "rnncore")
    return os.path.isdir(rn) and any(f.startswith("_core") and f.endswith((".so", ".pyd")) for f in os.listdir(rn))


class Worker:
    def __init__(self, engine, threads=None, pythonpath=None):
        env = dict(os.environ)
        if pythonpath:  # rnncore from this checkout (built in place) instead of the installed one
            env["PYTHONPATH"] = os.pathsep.join([pythonpath] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        if engine == "numpy":  # time numpy's own sgemm kernel, not the conservative fallback
            env.pop("OPENBLAS_CORETYPE", None)
            env.pop("OPENBLAS_L2_SIZE", None)
            env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", engine], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, workload, threads, reps):
        self.proc.stdin.write(json.dumps({"workload": workload, "threads": threads, "reps": reps}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("benchmark worker died")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def torch_available():
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None
    except Exception:
        return False


def machine_description():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        for line in info.splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        flags = [f for f in ("avx512f", "avx2", "fma") if f" {f}" in info]
        model += f" ({', '.join(flags)})"
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def main():
    ap = argparse.ArgumentParser(description="rnncore vs PyTorch, side by side in one run.")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--only", nargs="+", default=["gemm", "lstm", "gru", "rnn_tanh", "varlen", "gen", "lmtrain"],
                    help="workload groups: gemm lstm gru rnn_tanh varlen gen lmtrain")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--modes", nargs="+", default=["fwd", "train"], choices=["fwd", "train"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3, help="alternations per workload (medians are taken)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per round")
    ap.add_argument("--settle", type=float, default=0.2,
                    help="seconds to pause before each timing, so the worker that ran last has its idle threads "
                         "stop spinning (OpenBLAS's spin for about 0.1 s) instead of sharing the cores")
    ap.add_argument("--quick", action="store_true", help="a few small workloads, one round (smoke test)")
    ap.add_argument("--record", action="store_true", help="append the table to bench/RESULTS.md")
    ap.add_argument("--baseline", metavar="DIR",
                    help="another rnncore checkout, built in place (setup.py build_ext --inplace), timed in the same "
                         "run, alternating with this one: adds the columns 'base ms' and 'base/this'")
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.quick:
        args.rounds, args.reps, args.settle = 1, 2, 0.0

    have_torch = torch_available()
    workers = {"rnncore": Worker("rnncore", pythonpath=ROOT if built_in_place(ROOT) else None)}
    if args.baseline:
        base = os.path.abspath(args.baseline)
        if not built_in_place(base):
            ap.error(f"--baseline: {base} has no rnncore/_core built in place (run setup.py build_ext --inplace there)")
        workers["base"] = Worker("rnncore", pythonpath=base)
    if have_torch:
        workers["torch"] = Worker("torch")
    rows = []
    header = (f"{'workload':<34} {'thr':>3} {'rnncore ms':>11} {'ref ms':>9} {'ref':>6} {'speedup':>8} "
              f"{'GFLOP/s':>8} {'% sgemm':>8} {'tokens/s':>9}" + (f" {'base ms':>9} {'base/this':>9}" if args.baseline else ""))
    print(header)
    print("-" * len(header))
    try:
        for threads in args.threads:
            if "numpy" in workers:
                workers.pop("numpy").close()
            workers["numpy"] = Worker("numpy", threads)  # numpy's BLAS threads are fixed at start
            sgemm = {"kind": "sgemm", "name": "numpy sgemm 2048^3"}
            peak = []
            for w in workloads(args):
                ref_engine = "numpy" if w["kind"] == "gemm" else ("torch" if have_torch else None)
                ours, theirs, based = [], [], []
                for _ in range(args.rounds):
                    time.sleep(args.settle)
                    r = workers["rnncore"].run(w, threads, args.reps)
                    if "error" in r:
                        raise RuntimeError(f"{w['name']}: rnncore: {r['error']}")
                    ours.append(r["seconds"])
                    if "base" in workers:
                        time.sleep(args.settle)
                        based.append(workers["base"].run(w, threads, args.reps).get("seconds", float("nan")))
                    if ref_engine:
                        time.sleep(args.settle)
                        r = workers[ref_engine].run(w, threads, args.reps)
                        theirs.append(r.get("seconds", float("nan")))
                    time.sleep(args.settle)
                    peak.append(workers["numpy"].run(sgemm, threads, 2).get("seconds", float("nan")))
                t_ours = statistics.median(ours)
                t_ref = statistics.median(theirs) if theirs else float("nan")
                gflops = w["flops"] / t_ours / 1e9
                sgemm_gflops = 2.0 * 2048 ** 3 / statistics.median(peak) / 1e9
                row = {"workload": w["name"], "threads": threads, "rnncore_ms": 1e3 * t_ours, "ref_ms": 1e3 * t_ref,
                       "ref": ref_engine or "-", "speedup": t_ref / t_ours, "gflops": gflops,
                       "pct_sgemm": 100.0 * gflops / sgemm_gflops, "sgemm_gflops": sgemm_gflops,
                       "tokens_per_s": w["tokens"] / t_ours if "tokens" in w else None,
                       "base_ms": 1e3 * statistics.median(based) if based else None}
                rows.append(row)
                tps = f"{row['tokens_per_s']:>9,.0f}" if row["tokens_per_s"] else f"{'':>9}"
                print(f"{row['workload']:<34} {threads:>3} {row['rnncore_ms']:>11.2f} {row['ref_ms']:>9.2f} "
                      f"{row['ref']:>6} {row['speedup']:>7.2f}x {gflops:>8.1f} {row['pct_sgemm']:>7.0f}% {tps}"
                      + (f" {row['base_ms']:>9.2f} {row['base_ms'] / row['rnncore_ms']:>8.2f}x" if based else ""),
                      flush=True)
    finally:
        for wk in workers.values():
            wk.close()
    if rows and args.baseline:
        ratios = [r["base_ms"] / r["rnncore_ms"] for r in rows]
        print(f"\nbaseline {args.baseline} / this build: median {statistics.median(ratios):.3f}x over {len(rows)} "
              f"workloads (min {min(ratios):.3f}x, max {max(ratios):.3f}x; > 1 means this build is faster)")
    if rows:
        print(f"\nnumpy sgemm 2048^3 in this run: " + ", ".join(
            f"{t} thread(s) {statistics.median(r['sgemm_gflops'] for r in rows if r['threads'] == t):.0f} GFLOP/s"
            for t in args.threads))
    if args.record:
        record(rows, args)


def record(rows, args):
    path = os.path.join(HERE, "RESULTS.md")
    cmd = "python bench/compare.py " + " ".join(sys.argv[1:])
    lines = [f"\n### {datetime.date.today().isoformat()} — `{cmd}`\n", f"Machine: {machine_description()}\n",
             "| workload | threads | rnncore ms | ref ms | ref | speedup | GFLOP/s | % sgemm | tokens/s |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        tps = f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else ""
        lines.append(f"| {r['workload']} | {r['threads']} | {r['rnncore_ms']:.2f} | {r['ref_ms']:.2f} | {r['ref']} | "
                     f"{r['speedup']:.2f}x | {r['gflops']:.1f} | {r['pct_sgemm']:.0f}% | {tps} |")
    for t in sorted({r["threads"] for r in rows}):
        sg = statistics.median(r["sgemm_gflops"] for r in rows if r["threads"] == t)
        lines.append(f"\nnumpy sgemm 2048^3, {t} thread(s), same run: {sg:.0f} GFLOP/s")
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"recorded in {path}")


if __name__ == "__main__":
    main()
