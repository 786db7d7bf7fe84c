"""Training speed of Zaremba's small PTB LSTM: full softmax against the adaptive softmax, same run.

    python bench/adaptive_lm.py                      # 5 rounds x 150 timed steps each, 2 threads
    python bench/adaptive_lm.py --quick              # 1 round of 20 steps (smoke test)
    python bench/adaptive_lm.py --rounds 7 --steps 200 --threads 1

Each round starts one fresh process per variant (the order alternates from round to round), which
builds the model exactly as examples/ptb_ladder.py's `lstm` / `lstm-adaptive` rungs do (the CLI's
builders: 2x200 LSTM, V = 10,000, B = T = 20, SGD, clip; adaptive: the ladder's rung), trains
--warmup steps untimed, then --steps steps through Trainer.fit on PTB, and reports tokens/s of the
training steps (Trainer.train_step: zero_grad, loss, backward, clip, SGD step) and the share of
the step in each phase (model.loss = embedding + LSTM forward + output layer forward, and for
the adaptive softmax its fused backward too; model.backward; clipping; optimizer step), timed by
wrapping those methods. The table quotes medians over rounds and the ratio of the medians.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VARIANTS = ("full", "adaptive")
PHASES = ("loss", "backward", "clip", "step")


def worker(variant, steps, warmup, threads, seed):
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import ptb_ladder

    import rnncore
    from rnncore import cli, optim

    rnncore.set_num_threads(threads)
    rung = "lstm" if variant == "full" else "lstm-adaptive"
    targs = cli.build_parser().parse_args(["train", "ptb", *ptb_ladder.TRAIN_ARGS[rung], "--seed", str(seed),
                                           "--no-progress", "--log-every", "1000000", "--checkpoint-every",
                                           "1000000", "--out", os.devnull])
    _, level, tok, train_ids, _ = cli._training_data(targs, None)
    model, opt, _ = cli._model_and_optimizer(targs, None, tok, level)
    trainer = cli._make_trainer(targs, model, opt, tok, level)
    trainer.checkpoint_dir = None
    trainer.metrics_path = None
    trainer.fit(train_ids, None, epochs=1, max_steps=warmup)

    spent = dict.fromkeys(PHASES, 0.0)

    def timed(name, fn):
        def call(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            spent[name] += time.perf_counter() - t0
            return out
        return call

    model.loss = timed("loss", model.loss)
    model.backward = timed("backward", model.backward)
    opt.step = timed("step", opt.step)
    clip = optim.clip_grad_norm_
    step_time = [0.0]
    train_step = trainer.train_step

    def timed_step(x, y):
        t0 = time.perf_counter()
        out = train_step(x, y)
        step_time[0] += time.perf_counter() - t0
        return out

    trainer.train_step = timed_step
    optim.clip_grad_norm_ = timed("clip", clip)
    try:
        tokens0 = trainer.tokens_seen
        trainer.fit(train_ids, None, epochs=1, max_steps=warmup + steps)
    finally:
        optim.clip_grad_norm_ = clip
    tokens = trainer.tokens_seen - tokens0
    return {"variant": variant, "tokens_per_s": tokens / step_time[0], "ms_per_step": 1e3 * step_time[0] / steps,
            "phases_ms": {k: 1e3 * v / steps for k, v in spent.items()},
            "params": sum(p.data.size for p in model.parameters()), "threads": rnncore.get_num_threads()}


def run_worker(variant, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", str(args.threads), "--seed", str(args.seed)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=150, help="timed training steps per process")
    ap.add_argument("--warmup", type=int, default=20, help="untimed training steps first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="one round of 20 steps")
    ap.add_argument("--json", metavar="FILE", help="also write every round's measurements here")
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.warmup, args.threads, args.seed)))
        return 0
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 20, 5
    runs = {v: [] for v in VARIANTS}
    loads = [os.getloadavg()[0]]
    print(f"Zaremba-small PTB training step, full vs adaptive softmax: {args.rounds} round(s) x {args.steps} steps, "
          f"{args.threads} thread(s); load average {loads[0]:.2f}", flush=True)
    for r in range(args.rounds):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            res = run_worker(variant, args)
            runs[variant].append(res)
            print(f"  round {r + 1} {variant:8s}: {res['tokens_per_s']:8.0f} tokens/s  "
                  f"({res['ms_per_step']:.1f} ms/step: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in res["phases_ms"].items()) + ")", flush=True)
        loads.append(os.getloadavg()[0])
    med = {v: statistics.median(x["tokens_per_s"] for x in runs[v]) for v in VARIANTS}
    print()
    print("| output layer | parameters | tokens/s (median) | ms/step | loss (fwd) ms | backward ms | clip ms | "
          "SGD step ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for v in VARIANTS:
        ms = statistics.median(x["ms_per_step"] for x in runs[v])
        ph = {k: statistics.median(x["phases_ms"][k] for x in runs[v]) for k in PHASES}
        name = "full softmax" if v == "full" else "adaptive softmax (the ladder's rung)"
        print(f"| {name} | {runs[v][0]['params'] / 1e6:.2f}M | {med[v]:,.0f} | {ms:.1f} | {ph['loss']:.1f} | "
              f"{ph['backward']:.1f} | {ph['clip']:.1f} | {ph['step']:.1f} |")
    print()
    print(f"adaptive / full: {med['adaptive'] / med['full']:.2f}x (target 1.8x); load average during the run "
          f"{min(loads):.2f}-{max(loads):.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"runs": runs, "loads": loads, "args": vars(args)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
