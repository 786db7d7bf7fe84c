"""Worker processes that run generated calls, so that a crash or a hang fails one call rather
than killing (or stalling) the process that asked for it.

Workers are forked from a multiprocessing fork server that has numpy and rnncore imported but
has never run a kernel (so no OpenMP pool exists yet to be broken by fork): a fresh worker
after a crash costs milliseconds, not an interpreter start. Each worker writes its stdout and
stderr to its own log file (what libgomp, glibc or a sanitizer prints when it dies is quoted in
the failure), limits its address space (RLIMIT_AS, 4 GiB by default, RNNCORE_FUZZ_RLIMIT_MB to
change, 0 for none; always none under AddressSanitizer) so that a huge allocation or a
thread-count explosion stays inside it, and is replaced after `recycle` calls.
"""
import multiprocessing
import os
import shutil
import signal
import tempfile
import time

from fuzz.known import under_asan

_context = None


def _mp_context():
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["numpy", "rnncore", "fuzz.worker"])
        _context = ctx
    return _context


def _rlimit_bytes():
    if under_asan():
        return 0
    mb = int(os.environ.get("RNNCORE_FUZZ_RLIMIT_MB", "4096"))
    return mb * (1 << 20)


ASAN_OOM = ("allocation-size-too-big", "out-of-memory", "requested allocation size", "allocator is out of memory")


class Outcome(dict):
    """status (ok/raised/unexpected/crash/hang), exc, message, detail, seconds."""

    @property
    def status(self):
        return self["status"]

    @property
    def bad(self):
        return self["status"] in ("unexpected", "crash", "hang")


def _sanitizer_report(pid):
    """The report a sanitizer wrote for process `pid` when ASAN_OPTIONS/UBSAN_OPTIONS send reports to
    files (log_path=..., as sanitize.sh does), or ""."""
    import glob
    import re

    text = []
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        m = re.search(r"(?:^|:)log_path=([^:]+)", os.environ.get(var, ""))
        if m:
            for path in glob.glob(f"{m.group(1)}*.{pid}"):
                try:
                    with open(path, errors="replace") as f:
                        text.append(f.read())
                except OSError:
                    pass
    return "\n".join(text)


def _signal_name(code):
    try:
        return signal.Signals(-code).name
    except (ValueError, TypeError):
        return str(code)


class _Worker:
    def __init__(self, directory, index, rlimit):
        ctx = _mp_context()
        self.log_path = os.path.join(directory, f"worker-{index}.log")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, self.log_path, rlimit), daemon=True)
        self.process.start()
        child.close()
        self.calls = 0
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            raise RuntimeError(f"fuzz: the worker did not start (see {self.log_path})")

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_tail(self, since, limit=6000):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                data = f.read()
        except OSError:
            return ""
        text = data.decode("utf-8", "replace")
        if len(text) <= limit:
            return text
        # the head says what happened (a sanitizer's ERROR line, libgomp's message), the tail where
        return text[:limit * 2 // 3] + "\n...\n" + text[-limit // 3:]

    def stop(self, kill=False):
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(10)
        self.conn.close()


def _serve(conn, log_path, rlimit):
    from fuzz.worker import serve

    serve(conn, log_path, rlimit)


class Pool:
    """Runs calls in a worker process, one at a time: run(call) -> Outcome; check(call) raises
    AssertionError with the reproducer unless the outcome is ok or an allowed exception."""

    def __init__(self, timeout=20.0, recycle=500):
        self.timeout = float(timeout)
        self.recycle = int(recycle)
        self.directory = tempfile.mkdtemp(prefix="rnncore-fuzz-")
        self.rlimit = _rlimit_bytes()
        self._worker = None
        self._started = 0
        self.started_workers = 0

    def _get(self):
        if self._worker is not None and self._worker.calls >= self.recycle:
            self._worker.stop()
            os.unlink(self._worker.log_path)
            self._worker = None
        if self._worker is None:
            self._started += 1
            self._worker = _Worker(self.directory, self._started, self.rlimit)
        return self._worker

    def run(self, call, timeout=None):
        timeout = self.timeout if timeout is None else float(timeout)
        w = self._get()
        w.calls += 1
        since = w.log_size()
        t0 = time.perf_counter()
        w.conn.send(call)
        if not w.conn.poll(timeout):
            w.stop(kill=True)
            self._worker = None
            return Outcome(status="hang", exc=None, message=f"no answer within {timeout:g} s (killed)",
                           detail=w.log_tail(since), seconds=time.perf_counter() - t0)
        try:
            return Outcome(w.conn.recv())
        except (EOFError, OSError):
            w.process.join(10)
            code = w.process.exitcode
            tail = w.log_tail(since)
            if under_asan():
                report = _sanitizer_report(w.process.pid)
                if report:
                    tail = (tail + "\n" + report)[:12000]
            w.stop(kill=True)
            self._worker = None
            if under_asan() and call.huge and any(m in tail for m in ASAN_OOM):
                # ASan's operator new aborts where the plain build throws std::bad_alloc (MemoryError)
                return Outcome(status="raised", exc="MemoryError", message="(ASan: " + ASAN_OOM[0] + ")",
                               detail="", seconds=time.perf_counter() - t0)
            how = f"killed by {_signal_name(code)}" if code is not None and code < 0 else f"exited with {code}"
            first = next((ln for ln in tail.splitlines() if ln.strip()), "")
            return Outcome(status="crash", exc=None, message=f"the worker {how}" + (f": {first[:300]}" if first
                                                                                    else ""),
                           detail=tail, seconds=time.perf_counter() - t0)

    def check(self, call, timeout=None):
        outcome = self.run(call, timeout)
        if outcome.bad:
            raise AssertionError(describe(call, outcome))
        return outcome

    def close(self):
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def describe(call, outcome):
    """A failure report: what happened, and the line that reproduces it."""
    lines = [f"{outcome['status'].upper()}: {outcome.get('exc') or ''} {outcome.get('message', '')}".rstrip(),
             "reproduce (from the repository root):",
             f"  PYTHONPATH=tests python3 -c \"from fuzz.repro import *; {call.code()}\""]
    detail = outcome.get("detail")
    if detail:
        lines += ["detail:", detail.rstrip()]
    return "\n".join(lines)
