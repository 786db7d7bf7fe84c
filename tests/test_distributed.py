"""rnncore.distributed under `mpirun -n 2` (tests/distributed_worker.py): 2 ranks with B/2 each equal
1 rank with B (an LSTM LM and a classifier, float64 and float32), rank 0 alone logs, checkpoints
resume at another world size, and a killed, hung or failing rank ends the job non-zero with a
message naming the failure, within 60 s; a restart from the last checkpoint then reproduces the
uninterrupted run bit for bit.

Skipped, with the reason, when mpirun or mpi4py is missing (.ci/run installs both).
"""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import rnncore
from rnncore import distributed
from rnncore.trainer import Trainer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import distributed_worker as worker  # noqa: E402

MPIRUN = shutil.which("mpirun")
try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False

needs_mpi = pytest.mark.skipif(MPIRUN is None or not HAVE_MPI4PY,
                               reason="needs Open MPI's mpirun (apt-get install openmpi-bin libopenmpi-dev) and "
                                      "mpi4py (pip install mpi4py); .ci/run installs both")
TOL = {"float64": 1e-10, "float32": 1e-5}


def mpirun(cfgs, tmp_path, n=2, timeout=60, env=None, stdout_only=False):
    """Run the worker on n ranks; (return code, stdout+stderr, seconds). Only rank 0 writes to stdout
    (the trainer's lines); the worker's own lines go to stderr, so stdout's lines are never interleaved."""
    e = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
             PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(rnncore.__file__))))
    e.update(env or {})
    cmd = [MPIRUN, "--oversubscribe", "-n", str(n), sys.executable, os.path.join(HERE, "distributed_worker.py"),
           json.dumps(cfgs)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=tmp_path, env=e, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0 or not stdout_only:
        return r.returncode, r.stdout + r.stderr, time.perf_counter() - t0
    return r.returncode, (r.stdout, r.stderr), time.perf_counter() - t0


def alone(cfg):
    """The same run in this process, one rank (no MPI)."""
    with open(os.devnull, "w") as null:
        return worker.run(cfg, None, null)[0]


def max_diff(a, b):
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in a)


def assert_equal_params(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One mpirun (start-up paid once) of every run the exactness, logging and resume tests compare."""
    if MPIRUN is None or not HAVE_MPI4PY:
        pytest.skip("needs mpirun and mpi4py")
    tmp = tmp_path_factory.mktemp("mpi")
    # a one-rank checkpoint at step 3, resumed below on 2 ranks
    alone({"kind": "lm", "steps": 3, "checkpoint_dir": str(tmp / "one")})
    cfgs = [{"kind": k, "dtype": dt, "steps": 5, "batch": 4 if k == "lm" else 6, "out": f"{k}_{dt}.npz"}
            for k in ("lm", "clf") for dt in ("float64", "float32")]
    cfgs[0]["checkpoint_dir"] = str(tmp / "two")  # the 2-rank LM run: metrics and its checkpoint at step 5
    cfgs.append({"kind": "lm", "steps": 8, "resume": str(tmp / "one" / "last.safetensors"), "out": "resumed2.npz"})
    cfgs.append({"kind": "lm", "steps": 10, "out": "lm10_2ranks.npz"})
    code, out, _ = mpirun(cfgs, tmp, stdout_only=True)
    assert code == 0, out
    return tmp, out


@needs_mpi
@pytest.mark.parametrize("kind", ["lm", "clf"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_two_ranks_with_half_the_batch_equal_one_rank(runs, kind, dtype):
    tmp, _ = runs
    two = dict(np.load(tmp / f"{kind}_{dtype}.npz"))
    one = alone({"kind": kind, "dtype": dtype, "steps": 5, "batch": 4 if kind == "lm" else 6})
    assert all(v.dtype == np.dtype(dtype) for v in two.values())
    initial = worker.build({"kind": kind, "dtype": dtype})[0]
    moved = max_diff({n: p.data for n, p in initial.named_parameters()}, one)
    assert moved > 100 * TOL[dtype]  # training changed the parameters: the comparison is not vacuous
    assert max_diff(one, two) <= TOL[dtype]


@needs_mpi
def test_only_rank_zero_logs(runs):
    tmp, (out, err) = runs
    assert err.count("worker rank 1 of 2 done") == 6 and err.count("worker rank 0 of 2 done") == 6
    for s in range(1, 6):  # log_every=1: each step's line once per run that took it (the resumed one from 4)
        assert sum(line.startswith(f"step {s:>7} |") for line in out.splitlines()) == 5 + (s >= 4), out
    assert out.count("final | step") == 6  # one final evaluation per run, from rank 0
    records = [json.loads(line) for line in open(tmp / "two" / "metrics.jsonl")]
    assert [r["step"] for r in records if r["event"] == "train"] == [1, 2, 3, 4, 5]


@needs_mpi
def test_checkpoints_resume_at_another_world_size(runs):
    tmp, _ = runs
    reference = alone({"kind": "lm", "steps": 8})
    # 1 rank -> 2 ranks (resumed in the mpirun above), and 2 ranks (its step-5 checkpoint) -> 1 rank
    resumed2 = dict(np.load(tmp / "resumed2.npz"))
    resumed1 = alone({"kind": "lm", "steps": 8, "resume": str(tmp / "two" / "last.safetensors")})
    ck = rnncore.load(str(tmp / "two" / "last.safetensors"))
    assert ck.extra["trainer"]["step"] == 5 and ck.arrays["hidden.h"].shape == (worker.L, 4, worker.H)
    assert len(ck.extra["rng_ranks"]) == 2
    assert max_diff(reference, resumed2) <= 1e-10
    assert max_diff(reference, resumed1) <= 1e-10


@needs_mpi
def test_killed_rank_stops_the_job_and_a_restart_reproduces_the_run(runs, tmp_path):
    tmp, _ = runs
    ckdir = tmp_path / "killed"
    cfg = {"kind": "lm", "steps": 10, "checkpoint_dir": str(ckdir), "checkpoint_every": 3,
           "fail": "kill", "fail_rank": 1, "fail_step": 8}
    code, out, seconds = mpirun(cfg, tmp_path)
    assert code != 0 and seconds < 60
    assert "rank 1" in out and "signal 9" in out, out
    ck = rnncore.load(str(ckdir / "last.safetensors"))
    assert ck.extra["trainer"]["step"] == 6  # the last checkpoint before the kill
    code, out, _ = mpirun({"kind": "lm", "steps": 10, "resume": str(ckdir / "last.safetensors"),
                           "out": "restarted.npz"}, tmp_path)
    assert code == 0, out
    # the restarted run equals the uninterrupted 2-rank run bit for bit
    assert_equal_params(dict(np.load(tmp / "lm10_2ranks.npz")), dict(np.load(tmp_path / "restarted.npz")))


@needs_mpi
def test_hung_rank_times_out_with_a_clear_error(tmp_path):
    cfg = {"kind": "lm", "steps": 8, "fail": "hang", "fail_rank": 1, "fail_step": 3}
    code, out, seconds = mpirun(cfg, tmp_path, env={distributed.TIMEOUT_ENV: "3"})
    assert code != 0 and seconds < 60
    assert "rnncore.distributed: rank 0 of 2: the gradient allreduce of step 3 did not complete within 3 s" in out, out


@needs_mpi
def test_exception_on_one_rank_aborts_the_job(tmp_path):
    cfg = {"kind": "clf", "steps": 8, "batch": 6, "fail": "raise", "fail_rank": 1, "fail_step": 2}
    code, out, seconds = mpirun(cfg, tmp_path)
    assert code != 0 and seconds < 60
    assert "rnncore.distributed: rank 1 of 2: failed: ValueError: injected failure at step 2" in out, out


@needs_mpi
def test_language_model_with_fewer_streams_than_ranks_is_refused(tmp_path):
    # batch 1 on 2 ranks: rank 0's slice of the streams is empty, so it carries no state; its
    # checkpoint gather then never matched rank 1's (a hang until the timeout, or mismatched
    # collectives). It must stop at once with a message saying what to change.
    cfg = {"kind": "lm", "steps": 4, "batch": 1, "checkpoint_dir": str(tmp_path / "ck"), "checkpoint_every": 2}
    code, out, seconds = mpirun(cfg, tmp_path, env={distributed.TIMEOUT_ENV: "10"})
    assert code != 0 and seconds < 60
    assert "needs at least one stream per rank" in out, out
    assert "did not complete" not in out, out


def worker_reports(out):
    """Every `worker report {json}` in mpirun's merged output, wherever it starts (two ranks' lines
    may still meet on one)."""
    decoder, found, at = json.JSONDecoder(), [], out.find("worker report ")
    while at >= 0:
        report, end = decoder.raw_decode(out, at + len("worker report "))
        found.append(report)
        at = out.find("worker report ", end)
    return found


@needs_mpi
def test_ranks_act_on_rank_zeros_evaluation(tmp_path):
    # each rank's evaluation gives another loss (as on a mixed set of hosts): rank 0's improves at
    # every evaluation, rank 1's never does. The plateau scheduler, the best score and early
    # stopping must follow rank 0's on both ranks (rank 1 used to halve its learning rate and stop
    # early on its own, leaving rank 0 waiting in the next allreduce).
    cfg = {"kind": "lm", "steps": 8, "eval_every": 2, "patience": 2, "plateau": True, "skew_eval": True,
           "report": True}
    code, out, seconds = mpirun(cfg, tmp_path, env={distributed.TIMEOUT_ENV: "10"})
    assert code == 0, out
    reports = {r["rank"]: r for r in worker_reports(out)}
    assert sorted(reports) == [0, 1], out
    assert reports[0] == dict(reports[1], rank=0), reports
    # rank 0's numbers: 4 evaluations, each better than the last, the final one reused (no 5th)
    assert reports[0]["best_score"] == reports[0]["val_loss"] == 6.0 and reports[0]["bad_evals"] == 0
    assert reports[0]["lr"] == 0.5 and reports[0]["stop"] == "max_steps"


@needs_mpi
def test_cli_train_distributed(tmp_path):
    text = tmp_path / "t.txt"
    rng = np.random.default_rng(0)
    text.write_text("".join(rng.choice(list("abcdefg \n"), 3000)))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(rnncore.__file__))))
    args = [str(text), "--hidden", "8", "--layers", "1", "--batch-size", "4", "--seq-len", "10", "--max-steps", "6",
            "--no-progress", "--log-every", "3", "--sample-every", "0", "--threads", "1"]
    r = subprocess.run([MPIRUN, "--oversubscribe", "-n", "2", sys.executable, "-m", "rnncore", "train", *args,
                        "--out", str(tmp_path / "two"), "--distributed"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("rnncore train: ") == 1 and "2 MPI ranks" in r.stdout
    assert r.stdout.count("done (max_steps): 6 steps") == 1
    assert "gradient bytes/step over 2 ranks" in r.stdout
    r1 = subprocess.run([sys.executable, "-m", "rnncore", "train", *args, "--out", str(tmp_path / "one")], env=env,
                        capture_output=True, text=True, timeout=60)
    assert r1.returncode == 0, r1.stdout + r1.stderr
    a = rnncore.load(str(tmp_path / "two" / "last.safetensors"))
    b = rnncore.load(str(tmp_path / "one" / "last.safetensors"))
    assert max_diff(a.state_dict, b.state_dict) <= 1e-5  # float32: the same run on 1 and 2 ranks


# -- without MPI ---------------------------------------------------------------------------------------

def test_world_of_one_without_mpi():
    code = ("import sys; from rnncore import distributed as d; w = d.init(); "
            "assert (w.rank, w.size, w.local_rank) == (0, 1, 0), w; assert 'mpi4py' not in sys.modules; "
            "print(w.shard(7))")
    env = {k: v for k, v in os.environ.items() if k not in distributed._SIZE_VARS}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(rnncore.__file__)))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(0, 7)"


def test_shards_are_contiguous_and_cover_everything():
    w = distributed.World(None)
    for n in (1, 4, 7, 10):
        for size in (1, 2, 3, 4):
            w.rank, w.size = 0, size
            cuts = []
            for r in range(size):
                w.rank = r
                cuts.append(w.shard(n))
            assert cuts[0][0] == 0 and cuts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))
            assert max(h - lo for lo, h in cuts) - min(h - lo for lo, h in cuts) <= 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        distributed.World(None, timeout=0)
    with pytest.raises(ValueError, match="RNNCORE_MPI_TIMEOUT must be a positive number"):
        os.environ[distributed.TIMEOUT_ENV] = "soon"
        try:
            distributed.World(None)
        finally:
            del os.environ[distributed.TIMEOUT_ENV]
    model, _ = worker.build({"kind": "lm"})
    with pytest.raises(TypeError, match="distributed must be None, a bool or an rnncore.distributed.World"):
        Trainer(model, rnncore.optim.SGD(model.parameters(), lr=0.1), distributed="yes")
    # a world of one is the plain Trainer
    t = Trainer(model, rnncore.optim.SGD(model.parameters(), lr=0.1), distributed=distributed.World(None))
    assert t.world is None


def test_gradient_bytes():
    w = distributed.World(None)
    # a model without parameters: no gradient buffer, 0 bytes (it raised IndexError)
    assert w.gradient_bytes([]) == 0
    assert w.gradient_bytes(iter(())) == 0
    for dtype in ("float64", "float32"):
        model, _ = worker.build({"kind": "lm", "dtype": dtype})
        params = model.parameters()
        n = sum(p.data.size for p in params)
        assert w.gradient_bytes(params) == (n + 3) * np.dtype(dtype).itemsize


def _devnull_fds():
    out = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            out += os.readlink(f"/proc/self/fd/{fd}") == os.devnull
        except OSError:
            pass
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc/self/fd (Linux)")
def test_non_root_rank_output_opens_no_file():
    # a non-root rank's Trainer discards its output; it opened os.devnull and never closed it
    model, _ = worker.build({"kind": "lm"})
    w = distributed.World(None)
    w.rank, w.size = 1, 2  # a world object of 2 ranks; no collective runs here
    before = _devnull_fds()
    trainers = [Trainer(model, rnncore.optim.SGD(model.parameters(), lr=0.1), distributed=w) for _ in range(3)]
    assert _devnull_fds() == before
    t = trainers[0]
    assert t.world is w and t.progress is False and t.metrics_path is None
    print("discarded", file=t.stream, flush=True)  # writes and flushes still work, they go nowhere
    t._write("discarded too")
    assert not t.stream.isatty()
    # rank 0 keeps its stream
    w.rank = 0
    with open(os.devnull, "w") as mine:
        assert Trainer(model, rnncore.optim.SGD(model.parameters(), lr=0.1), distributed=w, stream=mine).stream is mine
