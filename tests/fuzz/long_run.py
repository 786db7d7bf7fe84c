"""The long fuzz budget: at least --calls generated calls over every target, in worker processes.

    python tests/fuzz/long_run.py --calls 100000            # about 10 minutes on 2 cores
    python tests/fuzz/long_run.py --calls 2000 --targets core_gemm,nn_rnn_layer --jobs 1

Calls are split over the targets by their weight (strategies.TARGETS) and over --jobs shards
(processes, each with its own worker and random seed). Every call's outcome is counted; each
distinct failure (target, kind, exception and first line of its message) is printed once with
the line that reproduces it. Prints the totals: calls, ok, allowed exceptions, crashes, hangs,
unexpected exceptions; exits 1 when any call crashed, hung or raised something unexpected.

By default the strategies include the inputs known to fail today (known.py), except the slow
ones (each costs seconds to a timeout), so the numbers say where the build stands;
--skip-known leaves them all out, as the CI tests do; --all-known leaves none out.
"""
import argparse
import json
import os
import sys
import time

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)


def _setup_path():
    for path in (TESTS, ROOT):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


def run_shard(args, shard):
    """One shard: its share of every target's calls; returns the tallies and the failures."""
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st

    from fuzz.pool import Pool, describe
    from fuzz.strategies import TARGETS

    names = [n for n in (args.targets.split(",") if args.targets else sorted(TARGETS))]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise SystemExit(f"long_run: unknown targets {unknown}; see strategies.TARGETS")
    total_weight = sum(TARGETS[n][2] for n in names)
    share = args.calls / args.jobs
    counts = {"calls": 0, "ok": 0, "raised": 0, "crash": 0, "hang": 0, "unexpected": 0, "call_seconds": 0.0}
    failures = {}
    per_target = {}
    slowest = []  # (seconds, target, code) of the slowest calls
    deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else None

    def run_one(name, call):
        outcome = pool.run(call)
        counts["calls"] += 1
        counts[outcome.status] += 1
        counts["call_seconds"] += outcome.get("seconds", 0.0)
        slowest.append((outcome.get("seconds", 0.0), name, call.code()[:300]))
        if len(slowest) > 40:
            slowest.sort(reverse=True)
            del slowest[10:]
        if outcome.bad:
            key = (name, outcome.status, outcome.get("exc"), (outcome.get("message") or "")[:80])
            if key not in failures:
                failures[key] = describe(call, outcome)
                print(f"[{name}] {failures[key]}\n", flush=True)

    def make_body(name, done):
        def body(calls):
            for call in calls:
                if deadline is not None and time.monotonic() > deadline:
                    return
                run_one(name, call)
                done[0] += 1
        return body

    with Pool(timeout=args.timeout) as pool:
        for name in names:
            strategy, _, weight = TARGETS[name]
            want = max(1, int(round(share * weight / total_weight)))
            done = [0]
            body = make_body(name, done)
            rounds = 0
            while done[0] < want and rounds < 20 and not (deadline is not None and time.monotonic() > deadline):
                left = want - done[0]
                batch = max(1, min(args.batch, left))
                test = settings(max_examples=-(-left // batch), database=None, deadline=None, derandomize=False,
                                phases=[Phase.generate], suppress_health_check=list(HealthCheck),
                                print_blob=False)(given(calls=st.lists(strategy, min_size=batch,
                                                                       max_size=batch))(body))
                test = seed(args.seed * 1000003 + shard * 7919 + rounds)(test)
                test()
                rounds += 1
            per_target[name] = done[0]
    slowest.sort(reverse=True)
    return {"counts": counts, "failures": failures, "per_target": per_target, "slowest": slowest[:10]}


def known_note(args):
    from fuzz.known import KNOWN, SLOW

    if args.skip_known:
        return f"skipped: {', '.join(sorted(KNOWN))}"
    if args.all_known:
        return "all included"
    slow = sorted(k for k in KNOWN if k in SLOW)
    return "included" + (f" but the slow {', '.join(slow)}" if slow else "")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=100000, help="calls in total (default 100000)")
    p.add_argument("--jobs", type=int, default=2, help="shards run in parallel, one worker each (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--targets", default="", help="comma-separated target names (default: all)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds before a call counts as a hang (20)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop generating after this long")
    p.add_argument("--skip-known", action="store_true", help="leave out the inputs known to fail (known.py)")
    p.add_argument("--all-known", action="store_true", help="include even the slow known failures")
    p.add_argument("--batch", type=int, default=8, help="calls generated per hypothesis example (default 8)")
    p.add_argument("--slowest", type=int, default=0, help="print the N slowest calls")
    p.add_argument("--shard", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.skip_known:
        os.environ["RNNCORE_FUZZ_KNOWN"] = "none" if args.all_known else "slow"
    _setup_path()

    if args.shard is not None:
        result = run_shard(args, args.shard)
        sys.stdout.write("\nRESULT " + json.dumps({"counts": result["counts"], "per_target": result["per_target"],
                                                   "slowest": result["slowest"],
                                                   "failures": ["\x1f".join(map(str, k)) + "\x1e" + v
                                                                for k, v in result["failures"].items()]}) + "\n")
        return 0

    import subprocess

    t0 = time.monotonic()
    procs = []
    for shard in range(args.jobs):
        cmd = [sys.executable, os.path.abspath(__file__), "--shard", str(shard)] + (argv if argv is not None
                                                                                       else sys.argv[1:])
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=dict(os.environ)))
    counts = {}
    per_target = {}
    failures = {}
    slowest = []
    ok = True
    for proc in procs:
        result = None
        for line in proc.stdout:
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
            else:
                sys.stdout.write(line)
        proc.wait()
        if result is None:
            print(f"long_run: a shard exited with {proc.returncode} without a result", flush=True)
            ok = False
            continue
        for k, v in result["counts"].items():
            counts[k] = counts.get(k, 0) + v
        for k, v in result["per_target"].items():
            per_target[k] = per_target.get(k, 0) + v
        slowest += result["slowest"]
        for item in result["failures"]:
            key, _, text = item.partition("\x1e")
            failures.setdefault(key, text)
    minutes = (time.monotonic() - t0) / 60
    print("\nper target: " + ", ".join(f"{k} {v}" for k, v in sorted(per_target.items())))
    if args.slowest:
        print("\nslowest calls:")
        for seconds, name, code in sorted(slowest, reverse=True)[:args.slowest]:
            print(f"  {seconds:7.3f} s  [{name}] {code}")
    print(f"\ndistinct failures: {len(failures)}")
    for key in sorted(failures):
        name, status, exc, message = key.split("\x1f")
        print(f"  [{name}] {status} {exc if exc != 'None' else ''} {message}")
    print(f"\ncalls {counts.get('calls', 0)}, ok {counts.get('ok', 0)}, allowed exceptions {counts.get('raised', 0)}, "
          f"crashes {counts.get('crash', 0)}, hangs {counts.get('hang', 0)}, "
          f"unexpected exceptions {counts.get('unexpected', 0)} ({minutes:.1f} min, {args.jobs} jobs, "
          f"known inputs {known_note(args)}; "
          f"{counts.get('call_seconds', 0.0) / 60:.1f} min inside the calls)")
    bad = counts.get("crash", 0) + counts.get("hang", 0) + counts.get("unexpected", 0)
    return 1 if (bad or not ok) else 0


if __name__ == "__main__":
    sys.exit(main())
