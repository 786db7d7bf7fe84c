"""The PyTorch drop-in against torch.nn and against rnncore's own layer, side by side in one run.

    python bench/torch_dropin.py                  # lstm, gru; shapes b, c, d and a ragged batch; 2 threads
    python bench/torch_dropin.py --quick          # one round of a few workloads (smoke test)
    python bench/torch_dropin.py --threads 1 2 --rounds 5
    python bench/torch_dropin.py --cells lstm --shapes b-proj d-proj ragged-proj   # LSTM with projections

Every engine times one training step (zero the gradients, forward, backward; float32; the
input needs its gradient too):
  torch    torch.nn.LSTM/GRU: layer.zero_grad(), out = layer(x), out.backward(dy)
  drop-in  rnncore.torch.LSTM/GRU, the same code (same weights, same inputs)
  native   rnncore.nn.LSTM/GRU: layer.zero_grad(), layer(x), layer.backward(dy)
  kernels  the bare _core.recurrent_forward/_backward calls of those layers on preallocated
           numpy arrays (gradients accumulate, never zeroed), in the drop-in's process: the
           floor the drop-in's overhead is measured from (overhead = drop-in - kernels, per
           step: autograd, the tensor <-> array views, the zeroed gradient buffers the kernels
           add into, and for the ragged batch the copies between packed and padded layouts)
The ragged workload is shape b with lengths ~ U[10, 100]. torch and the drop-in get a
PackedSequence (enforce_sorted=False) whose data is the leaf that needs its gradient, and
backpropagate from the packed output's data (as a loss on out.data does); the native layer
and the kernels get `lengths=`. pack/pad are left out of the step: their own backward in
torch (pad_packed_sequence's costs ~20 ms here) would be the same for torch and the drop-in.
"tiny" (T=1, B=1, I=H=8) is all overhead. Shapes (T, B, I, H) as bench/compare.py: b (100, 16, 256, 256), c (100, 1, 256,
256), d 2 layers (50, 32, 128, 1024).
"<shape>-proj" (LSTM only) is that shape with projections, proj_size P = H/4 (b: 64, d: 256):
every engine runs an LSTM with proj_size (torch.nn.LSTM then leaves oneDNN for its native
path, which is what a user of LSTMP gets); outputs and dy are P wide.

Like compare.py, each engine runs in its own long-lived worker process (torch's and
rnncore's idle threads never share a process by accident), the engines alternate round by
round, and the table quotes medians. "kept" is the share of the native layer's advantage over
torch that the drop-in keeps: (torch - drop-in) / (torch - native).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (the shapes, time_it, lengths_for, machine_description)

ENGINES = ("torch", "dropin", "native", "kernels")
PROCESS = {"torch": "torch", "dropin": "dropin", "kernels": "dropin", "native": "native"}  # worker per engine


def workloads(args):
    out = []
    for cell in args.cells:
        for shape in args.shapes:
            proj = shape.endswith("-proj")
            if proj and cell != "lstm":
                continue  # projections are an LSTM's only
            base = shape[:-len("-proj")] if proj else shape
            if base == "tiny":
                T, B, I, H, layers, ragged = 1, 1, 8, 8, 1, False
            elif base == "ragged":
                T, B, I, H, layers = compare.SHAPES["b"]
                ragged = True
            else:
                T, B, I, H, layers = compare.SHAPES[base]
                ragged = False
            out.append({"name": f"{cell} {shape} train", "cell": cell, "T": T, "B": B, "I": I, "H": H,
                        "layers": layers, "ragged": ragged, "P": H // 4 if proj else 0})
    if args.quick:
        out = [w for w in out if w["name"] in ("lstm b train", "lstm ragged train", "lstm tiny train",
                                                "lstm b-proj train")]
    return out


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------
def build_torch(w, threads, module):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cls = {"lstm": module.LSTM, "gru": module.GRU}[w["cell"]]
    layer = cls(w["I"], w["H"], num_layers=w["layers"], **({"proj_size": w["P"]} if w.get("P") else {}))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(w["T"], w["B"], w["I"], generator=g).requires_grad_(True)
    dy = torch.randn(w["T"], w["B"], w.get("P") or w["H"], generator=g)
    if w["ragged"]:
        lengths = torch.from_numpy(compare.lengths_for(w))
        pack = torch.nn.utils.rnn.pack_padded_sequence
        p = pack(x.detach(), lengths, enforce_sorted=False)
        x = torch.nn.utils.rnn.PackedSequence(p.data.requires_grad_(True), p.batch_sizes, p.sorted_indices,
                                              p.unsorted_indices)
        dy = pack(dy, lengths, enforce_sorted=False).data
    leaf = x.data if w["ragged"] else x

    def train_step():
        layer.zero_grad()
        out, _ = layer(x)
        (out.data if w["ragged"] else out).backward(dy)
        leaf.grad = None

    return train_step


def build_native(w, threads):
    import numpy as np

    from rnncore import nn

    cls = {"lstm": nn.LSTM, "gru": nn.GRU}[w["cell"]]
    layer = cls(w["I"], w["H"], num_layers=w["layers"], seed=0, threads=threads,
                **({"proj_size": w["P"]} if w.get("P") else {}))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((w["T"], w["B"], w["I"]), dtype=np.float32)
    dy = rng.standard_normal((w["T"], w["B"], w.get("P") or w["H"]), dtype=np.float32)
    lengths = compare.lengths_for(w) if w["ragged"] else None

    def train_step():
        layer.zero_grad()
        layer(x, lengths=lengths)
        layer.backward(dy)

    return train_step


def build_kernels(w, threads):
    """The bare kernel calls of one layer stack, preallocated: what the Python layers add nothing to."""
    import numpy as np
    import torch

    from rnncore import _core

    torch.set_num_threads(threads)  # this process also runs the drop-in
    G = {"lstm": 4, "gru": 3}[w["cell"]]
    T, B, I, H, L, P = w["T"], w["B"], w["I"], w["H"], w["layers"], w.get("P", 0)
    R = P or H  # the width of h and of the outputs
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.standard_normal(s, dtype=np.float32) * 0.05  # noqa: E731
    params = [(f32(G * H, I if l == 0 else R), f32(G * H, R), f32(G * H), f32(G * H)) for l in range(L)]
    grads = [tuple(np.zeros_like(p) for p in ps) for ps in params]
    w_hr = [f32(P, H) if P else None for _ in range(L)]
    dw_hr = [None if a is None else np.zeros_like(a) for a in w_hr]
    x = f32(T, B, I)
    outs = [np.empty((T, B, R), np.float32) for _ in range(L)]
    dxs = [np.empty((T, B, I if l == 0 else R), np.float32) for l in range(L)]
    dy = f32(T, B, R)
    lengths = compare.lengths_for(w) if w["ragged"] else None
    ws = [_core.RecurrentWorkspace() for _ in range(L)]

    def train_step():
        inp = x
        for l in range(L):
            _core.recurrent_forward(w["cell"], inp, *params[l], None, None, lengths, False, outs[l], 0, threads, ws[l],
                                    w_hr=w_hr[l])
            inp = outs[l]
        grad = dy
        for l in reversed(range(L)):
            _core.recurrent_backward(ws[l], grad, 0, None, None, params[l][0], params[l][1], *grads[l], dxs[l], False,
                                     threads, w_hr=w_hr[l], dw_hr=dw_hr[l])
            grad = dxs[l]

    return train_step


def build(engine, w, threads):
    if engine == "torch":
        import torch

        return build_torch(w, threads, torch.nn)
    if engine == "dropin":
        import rnncore.torch

        return build_torch(w, threads, rnncore.torch)
    if engine == "native":
        return build_native(w, threads)
    return build_kernels(w, threads)


def check_once(engine, w, threads):
    """The drop-in's step gives torch's gradients (the timing is of a correct step)."""
    if engine != "dropin":
        return
    import torch

    import rnncore.torch

    grads = []
    for module in (torch.nn, rnncore.torch):
        torch.manual_seed(0)
        cls = {"lstm": module.LSTM, "gru": module.GRU}[w["cell"]]
        layer = cls(w["I"], w["H"], num_layers=w["layers"], **({"proj_size": w["P"]} if w.get("P") else {}))
        x = torch.randn(min(w["T"], 8), w["B"], w["I"], generator=torch.Generator().manual_seed(0))
        layer(x)[0].square().sum().backward()
        grads.append([p.grad for p in layer.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def serve():
    cache = {}
    for line in sys.stdin:
        req = json.loads(line)
        key = (req["engine"], json.dumps(req["workload"], sort_keys=True), req["threads"])
        try:
            if key not in cache:
                if len(cache) >= 2:
                    cache.pop(next(iter(cache)))
                check_once(req["engine"], req["workload"], req["threads"])
                cache[key] = build(req["engine"], req["workload"], req["threads"])
            reply = {"seconds": compare.time_it(cache[key], req["reps"])}
        except Exception as exc:  # report, keep serving
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


class Worker:
    def __init__(self):
        env = dict(os.environ)
        if compare.built_in_place(compare.ROOT):  # this checkout's build, not an installed one
            env["PYTHONPATH"] = os.pathsep.join([compare.ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, engine, workload, threads, reps):
        self.proc.stdin.write(json.dumps({"engine": engine, "workload": workload, "threads": threads,
                                          "reps": reps}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("benchmark worker died")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{workload['name']}: {engine}: {reply['error']}")
        return reply["seconds"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description="rnncore.torch vs torch.nn vs rnncore.nn, side by side in one run.")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru"], choices=["lstm", "gru"])
    ap.add_argument("--shapes", nargs="+", default=["b", "c", "d", "ragged", "tiny"],
                    choices=["b", "c", "d", "ragged", "tiny", "b-proj", "c-proj", "d-proj", "ragged-proj"],
                    help="'<shape>-proj': the LSTM with projections, proj_size = H/4 (lstm only)")
    ap.add_argument("--threads", nargs="+", type=int, default=[2])
    ap.add_argument("--rounds", type=int, default=5, help="alternations per workload (medians are taken)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per round")
    ap.add_argument("--settle", type=float, default=0.2, help="seconds to pause before each timing (idle spinning)")
    ap.add_argument("--quick", action="store_true", help="a few workloads, one round (smoke test)")
    args = ap.parse_args()
    if args.serve:
        serve()
        return
    if args.quick:
        args.rounds, args.reps, args.settle = 1, 2, 0.0
    if not compare.torch_available():
        raise SystemExit("torch_dropin.py needs torch (pip install torch)")

    workers = {name: Worker() for name in sorted(set(PROCESS.values()))}
    rows = []
    print(f"{'workload':<24} {'thr':>3} {'torch ms':>9} {'native ms':>9} {'drop-in ms':>10} {'kernels ms':>10} "
          f"{'native':>7} {'drop-in':>7} {'kept':>6} {'overhead ms':>11}")
    try:
        for threads in args.threads:
            for w in workloads(args):
                times = {e: [] for e in ENGINES}
                for r in range(args.rounds):
                    order = ENGINES if r % 2 == 0 else ENGINES[::-1]
                    for engine in order:
                        time.sleep(args.settle)
                        times[engine].append(workers[PROCESS[engine]].run(engine, w, threads, args.reps))
                med = {e: 1e3 * statistics.median(t) for e, t in times.items()}
                adv = med["torch"] - med["native"]
                kept = (med["torch"] - med["dropin"]) / adv if adv > 0 else float("nan")
                row = dict(workload=w["name"], threads=threads, **{f"{e}_ms": m for e, m in med.items()},
                           native_speedup=med["torch"] / med["native"], dropin_speedup=med["torch"] / med["dropin"],
                           kept=kept, overhead_ms=med["dropin"] - med["kernels"])
                rows.append(row)
                print(f"{w['name']:<24} {threads:>3} {med['torch']:>9.3f} {med['native']:>9.3f} {med['dropin']:>10.3f} "
                      f"{med['kernels']:>10.3f} {row['native_speedup']:>6.2f}x {row['dropin_speedup']:>6.2f}x "
                      f"{100 * kept:>5.0f}% {row['overhead_ms']:>11.3f}", flush=True)
    finally:
        for wk in workers.values():
            wk.close()
    print(f"\nMachine: {compare.machine_description()}; {args.rounds} rounds x {args.reps} reps, medians\n")
    print("| workload | threads | torch ms | native ms | drop-in ms | kernels ms | native speedup | drop-in speedup "
          "| kept | drop-in overhead ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workload']} | {r['threads']} | {r['torch_ms']:.3f} | {r['native_ms']:.3f} | {r['dropin_ms']:.3f} | "
              f"{r['kernels_ms']:.3f} | {r['native_speedup']:.2f}x | {r['dropin_speedup']:.2f}x | "
              f"{100 * r['kept']:.0f}% | {r['overhead_ms']:.3f} |")


if __name__ == "__main__":
    main()
