"""Seq2seq side by side: rnncore.nn.Seq2Seq against its PyTorch peer (bench/seq2seq_torch.py).

    python bench/seq2seq_compare.py                          # every workload, 1 and 2 threads
    python bench/seq2seq_compare.py --engines torch --quick  # the torch side alone (smoke test)
    python bench/seq2seq_compare.py --only train --layers 1 --threads 2 --record
    python bench/seq2seq_compare.py --check-only                 # the float64 parity checks alone

The model (issue 12's verse task sizes): vocabulary 8000 per side, E = H = 256, LSTM cells, a
bidirectional encoder of 128 units per direction, the "concat" bridge, Luong "general"
attention (--attention), 1 and 2 layers, both placements: "feed" (input feeding; torch: a
Python loop over target steps) and "after" (attention after the decoder RNN, batched).
Workloads:
  train   one step = loss (forward) + backward + clip_grad_norm 5 + Adam(lr 1e-3), batch 32;
          target: rnncore >= 2x torch
  beam5   beam width 5 (n_best 1, length_penalty 1.0) over 256 sources, max_len 40, in batches
          of --decode-batch sources; target: rnncore >= 5x torch
Data: synthetic pairs shaped like the verse task's <= 25-word pairs (source length uniform in
[3, 25], target length = source length + N(0, 3), clipped to [1, 25]; ids uniform over the
non-special ids; specials <pad>=0 <unk>=1 <s>=2 </s>=3), one fixed seeded list of batches both
engines cycle through in the same order; layout rnncore.data.PairBatch's (time-major int64,
tgt_out padded with -100).

With both engines the run first checks, in a process of its own, that the two compute the same
thing: rnncore's Seq2Seq (float64, seed 0) is loaded into the torch model and the losses of a
batch must agree to 1e-9 (relative), the gradients to 1e-7, the losses of 3 Adam steps to
1e-9, and the beam outputs of a few sources are compared (reported, not asserted: the two
beam searches' stopping rules may differ). The float32 copy of those weights is what both
timing workers start from (torch alone: torch's own initialisation). As bench/compare.py:
each engine runs in its own long-lived worker process, the engines alternate round by round
on every workload, the table quotes medians, threads are pinned (torch.set_num_threads /
rnncore's threads=), and the host's model, ISA flags and rnncore's kernel choice head the table.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import compare  # noqa: E402  (time_it, machine_description, built_in_place)

PAD, UNK, BOS, EOS = 0, 1, 2, 3
MODEL = {"V": 8000, "E": 256, "H": 256}
TARGETS = {"train": 2.0, "beam5": 5.0}


# --------------------------------------------------------------------------------------------
# Data and workloads
# --------------------------------------------------------------------------------------------
def pair_lengths(rng, n):
    """Source and target lengths (words, </s> not counted) like the verse task's <= 25-word pairs."""
    src = rng.integers(3, 26, size=n)
    tgt = (src + np.rint(rng.normal(0.0, 3.0, size=n))).astype(np.int64).clip(1, 25)
    return src.astype(np.int64), tgt


def make_batch(rng, B, V):
    """-> (src (S, B), src_lengths (B,), tgt_in (T, B), tgt_out (T, B)), int64, time-major."""
    sl, tl = pair_lengths(rng, B)
    S, T = int(sl.max()), int(tl.max()) + 1
    src = np.full((S, B), PAD, np.int64)
    tgt_in = np.full((T, B), PAD, np.int64)
    tgt_out = np.full((T, B), -100, np.int64)
    for b in range(B):
        src[:sl[b], b] = rng.integers(4, V, size=sl[b])
        words = rng.integers(4, V, size=tl[b])
        tgt_in[0, b] = BOS
        tgt_in[1:tl[b] + 1, b] = words
        tgt_out[:tl[b], b] = words
        tgt_out[tl[b], b] = EOS
    return src, sl, tgt_in, tgt_out


def train_batches(w, n=16):
    rng = np.random.default_rng(w["data_seed"])
    return [make_batch(rng, w["B"], w["V"]) for _ in range(n)]


def decode_batches(w):
    """The 256 test sources as batches of decode_batch: (src (S, b), src_lengths (b,))."""
    rng = np.random.default_rng(w["data_seed"] + 1)
    out = []
    for start in range(0, w["sources"], w["decode_batch"]):
        src, sl, _, _ = make_batch(rng, min(w["decode_batch"], w["sources"] - start), w["V"])
        out.append((src, sl))
    return out


def workloads(args):
    out = []
    for kind in args.only:
        for layers in args.layers:
            for placement in args.placements:
                w = {"kind": kind, "layers": layers, "placement": placement, "attention": args.attention,
                     **MODEL, "data_seed": 0}
                if kind == "train":
                    w.update(B=32, name=f"train B=32 L={layers} {placement}")
                else:
                    w.update(sources=256, decode_batch=args.decode_batch, max_len=40, beam=5, n_best=1,
                             length_penalty=1.0, name=f"beam5 256 src L={layers} {placement}")
                out.append(w)
    if args.quick:
        out = [w for w in out if w["layers"] == 1]
    return out


def config_key(w):
    return f"L{w['layers']}_{w['placement']}_{w['attention']}"


# --------------------------------------------------------------------------------------------
# rnncore side (written against the issue-12 spec and the lead's draft of rnncore.nn.Seq2Seq)
# --------------------------------------------------------------------------------------------
def rnncore_model(w, dtype, threads):
    from rnncore import nn

    return nn.Seq2Seq(w["V"], w["V"], embedding_dim=w["E"], hidden_size=w["H"], num_layers=w["layers"],
                      cell="lstm", bidirectional=True, attention=w["attention"],
                      input_feed=w["placement"] == "feed", bridge="concat", dropout=0.0, src_padding_idx=PAD,
                      tgt_padding_idx=PAD, dtype=dtype, seed=0, threads=threads)


def rnncore_beam(model, src, sl, w, threads):
    """Beam search of a padded batch: one encoder call, then rnncore.sampling.seq2seq_decode on the
    model's DecoderParts (what Seq2Seq.translate_ids does per batch). -> per source a list of
    hypotheses (tokens, score, normalized)."""
    from rnncore import sampling

    kw = dict(bos=BOS, eos=EOS, max_len=w["max_len"], beam_width=w["beam"], n_best=w["n_best"],
              length_penalty=w["length_penalty"])
    memory, state = model.encode(src, sl)
    return sampling.seq2seq_decode(model.decoder_parts(), memory, sl, state, method="beam", threads=threads, **kw)


def hyp_fields(h):
    """(tokens, score) of a hypothesis given as a dict or an object with attributes."""
    if isinstance(h, dict):
        return list(h["tokens"]), float(h["score"])
    return list(h.tokens), float(h.score)


def build_rnncore(w, threads):
    import numpy as np

    from rnncore import optim

    model = rnncore_model(w, np.float32, threads)
    if w.get("weights"):
        with np.load(w["weights"]) as f:
            model.load_state_dict({k: f[k] for k in f.files})
    if w["kind"] == "train":
        batches, i = train_batches(w), [0]
        opt = optim.Adam(model.parameters(), lr=1e-3, threads=threads)

        def train_step():
            src, sl, ti, to = batches[i[0] % len(batches)]
            i[0] += 1
            model.loss(src, sl, ti, to)
            model.zero_grad()
            model.backward()
            optim.clip_grad_norm_(model.parameters(), 5.0, threads=threads)
            opt.step()

        return train_step
    model.eval()
    batches = decode_batches(w)
    return lambda: [rnncore_beam(model, src, sl, w, threads) for src, sl in batches]


def rnncore_info():
    from rnncore import _core

    return {"isa": _core.isa(), "gemm_kernel": _core.gemm_kernel()}


# --------------------------------------------------------------------------------------------
# torch side
# --------------------------------------------------------------------------------------------
def torch_model(w):
    from seq2seq_torch import Seq2SeqTorch

    return Seq2SeqTorch(w["V"], w["V"], w["E"], w["H"], w["layers"], attention=w["attention"],
                        input_feed=w["placement"] == "feed", bridge="concat", dropout=0.0, padding_idx=PAD)


def build_torch(w, threads):
    import numpy as np
    import torch

    from seq2seq_torch import as_torch_batch, load_rnncore_state

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch_model(w)
    if w.get("weights"):
        with np.load(w["weights"]) as f:
            load_rnncore_state(model, {k: f[k] for k in f.files})
    if w["kind"] == "train":
        batches, i = [as_torch_batch(*b) for b in train_batches(w)], [0]
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def train_step():
            src, sl, ti, to = batches[i[0] % len(batches)]
            i[0] += 1
            opt.zero_grad()
            loss = model.loss(src, sl, ti, to)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()

        return train_step
    model.eval()
    batches = [(torch.from_numpy(s), torch.from_numpy(l)) for s, l in decode_batches(w)]
    return lambda: [model.beam_search(s, l, BOS, EOS, w["max_len"], w["beam"], w["n_best"], w["length_penalty"])
                    for s, l in batches]


def torch_info():
    import torch

    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


# --------------------------------------------------------------------------------------------
# The parity check (both engines in one process, float64)
# --------------------------------------------------------------------------------------------
def check(w, out_path, check_batch=8, decode_sources=8):
    """rnncore's float64 model loaded into torch: equal loss, gradients, 3 Adam steps; saves the
    float32 weights to out_path; returns a summary dict."""
    import numpy as np
    import torch

    from rnncore import optim
    from seq2seq_torch import as_torch_batch, load_rnncore_state, rnncore_key

    torch.set_num_threads(1)
    ours = rnncore_model(w, np.float64, 1)
    state = ours.state_dict()
    np.savez(out_path, **{k: v.astype(np.float32) for k, v in state.items()})
    theirs = load_rnncore_state(torch_model(w), state, dtype=torch.float64)
    rng = np.random.default_rng(123)
    batches = [make_batch(rng, check_batch, w["V"]) for _ in range(3)]
    report = {}
    # one loss and its gradients
    src, sl, ti, to = batches[0]
    l_ours = ours.loss(src, sl, ti, to)
    ours.zero_grad()
    ours.backward()
    loss_t = theirs.loss(*as_torch_batch(src, sl, ti, to))
    theirs.zero_grad()
    loss_t.backward()
    l_theirs = loss_t.item()
    report["loss"] = (float(l_ours), l_theirs)
    if not abs(l_ours - l_theirs) <= 1e-9 * abs(l_theirs):
        raise AssertionError(f"{w['name']}: losses differ: rnncore {l_ours!r}, torch {l_theirs!r}")
    grads = dict(ours.named_parameters())
    worst = 0.0
    for k, p in theirs.named_parameters():
        g_t = p.grad.numpy()
        g_o = grads[rnncore_key(k, theirs.decoder.input_feed)].grad
        err = float(np.abs(g_o - g_t).max() / max(np.abs(g_t).max(), 1e-300))
        worst = max(worst, err)
        if err > 1e-7:
            raise AssertionError(f"{w['name']}: gradient of {k} differs: max relative error {err:.3g}")
    report["grad_rel_err"] = worst
    # three Adam steps on the same batches, same order
    opt_o = optim.Adam(ours.parameters(), lr=1e-3, threads=1)
    opt_t = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    traj = []
    for src, sl, ti, to in batches:
        lo = ours.loss(src, sl, ti, to)
        ours.zero_grad()
        ours.backward()
        opt_o.step()
        opt_t.zero_grad()
        loss_t = theirs.loss(*as_torch_batch(src, sl, ti, to))
        loss_t.backward()
        opt_t.step()
        lt = loss_t.item()
        traj.append((float(lo), lt))
        if not abs(lo - lt) <= 1e-9 * abs(lt):
            raise AssertionError(f"{w['name']}: Adam trajectories part: rnncore {lo!r}, torch {lt!r}")
    report["adam_losses"] = traj
    # beam outputs on a few sources (reported)
    d = dict(w, kind="beam5", sources=decode_sources, decode_batch=decode_sources, max_len=40, beam=5, n_best=1,
             length_penalty=1.0)
    ours.eval()
    theirs.eval()
    same = total = 0
    try:
        for src, sl in decode_batches(d):
            a = rnncore_beam(ours, src, sl, d, 1)
            b = theirs.beam_search(torch.from_numpy(src), torch.from_numpy(sl), BOS, EOS, 40, 5, 1, 1.0)
            for ha, hb in zip(a, b):
                ta, sa = hyp_fields(ha[0])
                total += 1
                same += ta == hb[0]["tokens"] and abs(sa - hb[0]["score"]) <= 1e-9 * abs(hb[0]["score"])
        report["beam_same"] = f"{same}/{total}"
    except Exception as exc:  # noqa: BLE001  (decoding may not be merged yet: report it)
        report["beam_same"] = f"not run: {type(exc).__name__}: {exc}"
    return report


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------
def serve(engine):
    builders = {"rnncore": build_rnncore, "torch": build_torch}
    infos = {"rnncore": rnncore_info, "torch": torch_info}
    cache = {}
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req.get("op") == "info":
                reply = infos[engine]()
            elif req.get("op") == "check":
                reply = check(req["workload"], req["out"])
            else:
                key = (json.dumps(req["workload"], sort_keys=True), req["threads"])
                if key not in cache:
                    cache.clear()
                    cache[key] = builders[engine](req["workload"], req["threads"])
                reply = {"seconds": compare.time_it(cache[key], req["reps"], req.get("min_seconds", 0.3))}
        except Exception as exc:  # noqa: BLE001  (report, keep serving)
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


class Worker:
    def __init__(self, engine):
        env = dict(os.environ)
        if compare.built_in_place(ROOT):  # rnncore from this checkout
            env["PYTHONPATH"] = os.pathsep.join([ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", engine], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("benchmark worker died")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def host_lines(infos):
    lines = [f"Host: {compare.machine_description()}; load average at start {os.getloadavg()[0]:.1f}"]
    if "rnncore" in infos:
        i = infos["rnncore"]
        lines.append(f"rnncore: isa {i.get('isa')}, gemm kernel {i.get('gemm_kernel')}")
    if "torch" in infos:
        i = infos["torch"]
        lines.append(f"torch {i.get('torch')}, cpu capability {i.get('cpu_capability')}")
    return lines


def main():
    ap = argparse.ArgumentParser(description="rnncore Seq2Seq vs its PyTorch peer, side by side in one run.")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--engines", nargs="+", default=["rnncore", "torch"], choices=["rnncore", "torch"])
    ap.add_argument("--only", nargs="+", default=["train", "beam5"], choices=["train", "beam5"])
    ap.add_argument("--layers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--placements", nargs="+", default=["feed", "after"], choices=["feed", "after"])
    ap.add_argument("--attention", default="general", choices=["dot", "general", "additive"])
    ap.add_argument("--decode-batch", type=int, default=64, help="sources per beam-search call (both engines)")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3, help="alternations per workload (medians are taken)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per round (training steps)")
    ap.add_argument("--settle", type=float, default=0.2, help="seconds to pause before each timing")
    ap.add_argument("--no-check", action="store_true", help="skip the float64 parity check (both engines)")
    ap.add_argument("--check-only", action="store_true", help="run the float64 parity checks, time nothing")
    ap.add_argument("--quick", action="store_true", help="1 layer only, one round (smoke test)")
    ap.add_argument("--record", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.quick:
        args.rounds, args.reps, args.settle = 1, 1, 0.0
    engines = list(dict.fromkeys(args.engines))
    workers = {e: Worker(e) for e in engines}
    tmp = tempfile.mkdtemp(prefix="seq2seq_bench_")
    rows, out_lines = [], []

    def say(line=""):
        print(line, flush=True)
        out_lines.append(line)

    try:
        infos = {}
        for e, wk in workers.items():
            r = wk.ask({"op": "info"})
            if "error" in r:
                raise RuntimeError(f"{e} worker: {r['error']}")
            infos[e] = r
        for line in host_lines(infos):
            say(line)
        wls = workloads(args)
        if "rnncore" in workers and "torch" in workers and not args.no_check:
            checked = {}
            for w in wls:
                key = config_key(w)
                if key in checked:
                    w["weights"] = checked[key]
                    continue
                path = os.path.join(tmp, key + ".npz")
                checker = Worker("rnncore")  # a fresh process holding both engines, float64
                r = checker.ask({"op": "check", "workload": w, "out": path})
                checker.close()
                if "error" in r:
                    raise RuntimeError(f"parity check {key}: {r['error']}")
                say(f"check {key}: loss rnncore {r['loss'][0]:.15g} torch {r['loss'][1]:.15g}; grads max rel err "
                    f"{r['grad_rel_err']:.2g}; 3 Adam steps agree; beam outputs equal: {r['beam_same']}")
                checked[key] = w["weights"] = path
        if args.check_only:
            return
        header = (f"{'workload':<28} {'thr':>3} {'rnncore ms':>11} {'torch ms':>10} {'speedup':>8} {'target':>7} "
                  f"{'rnncore tok/s':>14} {'torch tok/s':>12}")
        say()
        say(header)
        say("-" * len(header))
        for threads in args.threads:
            for w in wls:
                times = {e: [] for e in engines}
                reps = args.reps if w["kind"] == "train" else 1
                for _ in range(args.rounds):
                    for e in engines:
                        time.sleep(args.settle)
                        r = workers[e].ask({"workload": w, "threads": threads, "reps": reps,
                                            "min_seconds": 0.3 if w["kind"] == "train" else 0.0})
                        if "error" in r:
                            raise RuntimeError(f"{w['name']}: {e}: {r['error']}")
                        times[e].append(r["seconds"])
                med = {e: statistics.median(v) for e, v in times.items()}
                ours, theirs = med.get("rnncore", float("nan")), med.get("torch", float("nan"))
                tokens = (sum(int((b[3] != -100).sum()) for b in train_batches(w)) / 16 if w["kind"] == "train"
                          else None)  # mean target tokens per training batch

                def tps(t):
                    return f"{tokens / t:,.0f}" if tokens and t == t else ""

                row = {"workload": w["name"], "threads": threads, "rnncore_ms": 1e3 * ours, "torch_ms": 1e3 * theirs,
                       "speedup": theirs / ours, "target": TARGETS[w["kind"]], "rnncore_tps": tps(ours),
                       "torch_tps": tps(theirs)}
                rows.append(row)
                say(f"{row['workload']:<28} {threads:>3} {row['rnncore_ms']:>11.1f} {row['torch_ms']:>10.1f} "
                    f"{row['speedup']:>7.2f}x {row['target']:>6.0f}x {row['rnncore_tps']:>14} {row['torch_tps']:>12}")
    finally:
        for wk in workers.values():
            wk.close()
    if args.record and rows:
        path = os.path.join(HERE, "RESULTS.md")
        cmd = "python bench/seq2seq_compare.py " + " ".join(sys.argv[1:])
        lines = [f"\n### {datetime.date.today().isoformat()} — `{cmd}`\n"] + [f"{x}  " for x in out_lines[:3]] + [
            "", "| workload | threads | rnncore ms | torch ms | speedup | target | rnncore tokens/s | torch tokens/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['workload']} | {r['threads']} | {r['rnncore_ms']:.1f} | {r['torch_ms']:.1f} | "
                         f"{r['speedup']:.2f}x | {r['target']:.0f}x | {r['rnncore_tps']} | {r['torch_tps']} |")
        with open(path, "a") as f:
            f.write("\n".join(lines) + "\n")
        print(f"recorded in {path}")

if __name__ == "__main__":
    main()
