"""Data-parallel scaling over MPI (issue 18): tokens/s of 1 rank x 1 thread against 2 ranks x 1
thread on the char-LSTM recipe (the README's `rnncore train`: a 2x256 LSTM, embedding 64, on
Shakespeare's characters, T=100, Adam, clipping at 5), the allreduce time and gradient bytes per
step, and the measured compute time per token that bench/RESULTS.md's scaling model starts from.

    python bench/mpi_scaling.py                     # --steps 12 --rounds 2 --batch 32 (per rank)
    python bench/mpi_scaling.py --steps 20 --rounds 3

Each round launches `mpirun -n 1`, `mpirun -n 2` and two independent `mpirun -n 1` at once (the
control: what the machine gives two processes without any MPI traffic) of this file, separate
processes, in turn. Weak scaling: every rank trains on --batch streams (the global batch is N x --batch),
so the work per rank is the same and the ratio of tokens/s is the speedup. Per step the rank
times the whole optimizer step and, inside it, the gradient allreduce (waiting for the other rank
included); after the training steps it times bare allreduces of the same flat buffer after a
barrier (the transfer alone). Medians over the steps after 2 warm-up steps; medians over rounds.
`uptime` is printed before and after: the machine is shared, so the figures are loaded ones.
Needs Open MPI's mpirun and mpi4py; as root it sets OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WARMUP = 2


def worker(args):
    import rnncore
    from rnncore import datasets, distributed, optim
    from rnncore.data import CharTokenizer, StreamBatcher
    from rnncore.nn import LanguageModel
    from rnncore.trainer import Trainer

    world = distributed.init(require=True)
    rnncore.set_num_threads(1)
    text = datasets.shakespeare()["train"]
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    B = args.batch * world.size  # weak scaling: --batch streams per rank
    model = LanguageModel(tok.vocab_size, 64, 256, num_layers=2, seed=0)
    opt = optim.Adam(model.parameters(), lr=2e-3)
    trainer = Trainer(model, opt, clip_grad_norm=5.0, batch_size=B, seq_len=100, progress=False,
                      stream=open(os.devnull, "w"), distributed=world if world.size > 1 else None, threads=1)
    batcher = StreamBatcher(ids, B, 100)
    steps, comm = [], []
    params = model.parameters()
    if world.size > 1:  # the broadcasts of fit() (no steps: max_steps=0 is refused, so do them by hand)
        trainer._sync_ranks()
    for k in range(args.steps):
        x, y = batcher.window(k)
        c0 = world.comm_seconds
        t0 = time.perf_counter()
        trainer.train_step(x, y)
        steps.append(time.perf_counter() - t0)
        comm.append(world.comm_seconds - c0)
    # the bare transfer: the same flat buffer, after a barrier, 20 times
    bare = []
    if world.size > 1:
        from mpi4py import MPI

        flat = np.ones(sum(p.data.size for p in params) + 3, np.float32)
        for _ in range(20):
            world.comm.Barrier()
            t0 = time.perf_counter()
            world.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
            bare.append(time.perf_counter() - t0)
    if world.is_root:
        s, c = steps[WARMUP:], comm[WARMUP:]
        print("RESULT " + json.dumps({
            "ranks": world.size, "batch_per_rank": args.batch, "tokens_per_step": B * 100,
            "step_s": statistics.median(s), "tokens_per_s": B * 100 / statistics.median(s),
            "allreduce_s": statistics.median(c), "bare_allreduce_s": statistics.median(bare) if bare else 0.0,
            "gradient_bytes": (sum(p.data.size for p in params) + 3) * 4,
            "parameters": sum(p.data.size for p in params)}), flush=True)


def _command(n, args):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [shutil.which("mpirun"), "--oversubscribe", "--bind-to", "none", "-n", str(n), sys.executable,
           os.path.abspath(__file__), "--worker", "--steps", str(args.steps), "--batch", str(args.batch)]
    return cmd, env


def _result(n, proc):
    out, err = proc.communicate(timeout=1800)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"mpirun -n {n} failed ({proc.returncode}):\n{out}\n{err}")


def launch(n, args, copies=1):
    """mpirun -n n (copies > 1: that many independent jobs at once; their results, summed tokens/s)."""
    cmd, env = _command(n, args)
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(copies)]
    results = [_result(n, p) for p in procs]
    if copies == 1:
        return results[0]
    out = dict(results[0])
    out["tokens_per_s"] = sum(r["tokens_per_s"] for r in results)
    out["step_s"] = statistics.median(r["step_s"] for r in results)
    return out


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=12, help="training steps per run (the first 2 are warm-up)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of (1 rank, 2 ranks)")
    p.add_argument("--batch", type=int, default=32, help="streams per rank")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model-only", nargs=2, type=float, metavar=("US_PER_TOKEN", "BYTES"),
                   help="print the scaling model for a compute time per token (us) and gradient bytes, and stop")
    args = p.parse_args()
    if args.model_only:
        return scaling_model(args.model_only[0] * 1e-6, args.model_only[1], batch=args.batch)
    if args.worker:
        return worker(args)
    if shutil.which("mpirun") is None:
        sys.exit("mpi_scaling: needs mpirun (apt-get install openmpi-bin libopenmpi-dev) and mpi4py")
    print("uptime before:", uptime(), flush=True)
    runs = {1: [], 2: [], "2 jobs": []}
    for r in range(args.rounds):
        for n in (1, 2, "2 jobs"):
            res = launch(2, args) if n == 2 else launch(1, args, copies=2 if n == "2 jobs" else 1)
            runs[n].append(res)
            print(f"round {r + 1}, {n} rank(s): {res['tokens_per_s']:,.0f} tokens/s, step {res['step_s'] * 1e3:.0f} ms, "
                  f"allreduce {res['allreduce_s'] * 1e3:.2f} ms (bare {res['bare_allreduce_s'] * 1e3:.2f} ms)",
                  flush=True)
    print("uptime after: ", uptime())
    med = {n: {k: statistics.median(x[k] for x in v) for k in v[0]} for n, v in runs.items()}
    one, two, pair = med[1], med[2], med["2 jobs"]
    per_token = one["step_s"] / one["tokens_per_step"]
    print(f"\nchar-LSTM 2x256 (embedding 64), {int(one['parameters']):,} parameters, "
          f"{int(two['gradient_bytes']):,} gradient bytes per step (float32 + 3 scalars)")
    print("| ranks x threads | batch per rank | tokens/s | step ms | allreduce ms/step (waiting included) | "
          "bare allreduce ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for n, m in med.items():
        label = "2 independent 1-rank jobs at once (no MPI traffic)" if n == "2 jobs" else f"{n} x 1"
        print(f"| {label} | {args.batch} | {m['tokens_per_s']:,.0f} | {m['step_s'] * 1e3:.1f} | "
              f"{m['allreduce_s'] * 1e3:.2f} | {m['bare_allreduce_s'] * 1e3:.3f} |")
    print(f"\nspeedup 2 ranks / 1 rank: {two['tokens_per_s'] / one['tokens_per_s']:.2f}x; two independent jobs "
          f"/ 1 rank: {pair['tokens_per_s'] / one['tokens_per_s']:.2f}x (what the loaded machine gives 2 processes); "
          f"2 ranks / 2 independent jobs: {two['tokens_per_s'] / pair['tokens_per_s']:.2f}x; "
          f"compute time per token (1 rank, 1 thread): {per_token * 1e6:.2f} us")
    scaling_model(per_token, two["gradient_bytes"], batch=args.batch)


def scaling_model(per_token, grad_bytes, T=100, batch=32, alpha=10e-6):
    """The paper model: ring allreduce 2(N-1)/N * bytes / bandwidth + 2(N-1) * alpha (latency per
    message), no overlap with compute; compute = batch * T * per_token per rank per step."""
    import math

    print(f"\nscaling model: compute {per_token * 1e6:.1f} us/token (measured, 1 thread), {grad_bytes / 1e6:.2f} MB "
          f"of gradients, T={T}, alpha={alpha * 1e6:.0f} us per ring message, no overlap")
    print("| ranks N | link | allreduce ms (bandwidth + latency) | efficiency at B/rank = " + str(batch) +
          " | communication > compute below B/rank | B/rank for 90% |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in (8, 64, 512):
        for gbit in (10, 100):
            bw = gbit * 1e9 / 8
            t_bw = 2 * (n - 1) / n * grad_bytes / bw
            t_ar = t_bw + 2 * (n - 1) * alpha
            t_c = batch * T * per_token
            eff = t_c / (t_c + t_ar)
            dominated = t_ar / (T * per_token)  # B/rank where compute = communication
            need = math.ceil(9 * t_ar / (T * per_token))
            print(f"| {n} | {gbit} Gbit/s | {t_ar * 1e3:.2f} ({t_bw * 1e3:.2f} + {(t_ar - t_bw) * 1e3:.2f}) | "
                  f"{eff * 100:.1f}% | {dominated:.1f} | {need} |")


if __name__ == "__main__":
    main()
