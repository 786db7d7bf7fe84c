"""Data-parallel training over MPI (mpi4py): one process per rank, each with the whole model.

    mpirun -n 2 rnncore train --distributed --threads 1 ...     # the CLI (the MPI environment is also detected)
    world = rnncore.distributed.init()                         # rank, size, local_rank; a world of 1 without MPI
    Trainer(model, opt, batch_size=32, seq_len=100, distributed=world).fit(ids, valid_ids)

What the Trainer does with a world of N > 1 ranks, at every step:

- The batch is the global one (``batch_size`` is the global batch B): every rank reads the same
  batch k and keeps its own contiguous slice of the columns, ``[B*r//N, B*(r+1)//N)``
  (:meth:`World.shard`). For a language model those columns are the rank's own streams, so 2
  ranks with B/2 streams each walk exactly what 1 rank with B streams walks; classifiers and
  seq2seq take their slice of a global batch whose examples come from the task's seeded shuffle,
  so the ranks' examples are disjoint and the same for every world size.
- Each rank runs loss + backward on its slice; then the gradients, each multiplied by the rank's
  count (tokens or examples the mean loss covers), are summed in ONE flat contiguous buffer by a
  buffer-method ``Iallreduce`` (no pickling) and divided by the global count: the result is the
  gradient of the global mean loss, what one rank with the whole batch computes (float64 within
  1e-10, float32 within 1e-5: only the order of the sums differs). The same buffer carries the
  loss sum, the count and each rank's clock, so every rank reports the same global loss and takes
  the same time-limit decision.
- Clipping (the global norm) and the optimizer step then run on identical gradients on every rank.
- Evaluation runs on every rank over the whole validation data (not sharded), then every rank takes
  rank 0's result (a small pickled broadcast): identical parameters give identical results only on
  identical hosts (another CPU, ISA or thread count changes the last bits), and the best checkpoint,
  patience and plateau schedules must agree on every rank.

At the start of fit() the parameters, the optimizer state and the trainer state are broadcast
from rank 0 (buffer-method ``Bcast`` for arrays; the small structure around them is pickled
once); each rank's dropout generators are rank 0's advanced by ``rank`` jumps, so ranks draw
different masks. Only rank 0 prints, logs metrics and writes checkpoints (atomically, as
always); the carried LM state is gathered to rank 0 for them, and every rank's generator states
go in too. A checkpoint resumes at any world size: the position is the global batch index, and
each rank takes its slice of the saved state (the generators: the saved ones when the world size
matches, else rank 0's jumped).

Failures: every collective waits at most ``timeout`` seconds (``RNNCORE_MPI_TIMEOUT``, default
300), polling its request; past it the rank says which collective of which step did not finish
and calls ``MPI_Abort``, so a dead or hung rank stops the job. An exception in fit() on any rank
prints ``rnncore.distributed: rank R of N failed: ...`` and calls ``MPI_Abort`` too (mpirun then
exits non-zero), instead of leaving the other ranks waiting forever.

mpi4py is imported only when MPI is used: rnncore itself does not need it.
"""
import contextlib
import os
import sys
import time

import numpy as np

from ._checks import check_int, check_real

__all__ = ["World", "init", "in_mpi_environment", "DistributedError"]

TIMEOUT_ENV = "RNNCORE_MPI_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
# environment variables that launchers set in every rank (Open MPI, MPICH/Hydra, PMIx, Slurm)
_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


class DistributedError(RuntimeError):
    """A distributed run cannot go on (e.g. the data cannot be split over the ranks)."""


def in_mpi_environment():
    """True when this process was started by an MPI launcher with more than one rank."""
    for var in _SIZE_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 1:
            return True
    return False


def _timeout_from_env():
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def init(comm=None, *, timeout=None, require=False):
    """The world this process trains in.

    comm: an mpi4py communicator (default ``MPI.COMM_WORLD`` when MPI is used).
    Without `comm`, MPI is used when the process runs under an MPI launcher with more than one
    rank (:func:`in_mpi_environment`) or when `require` is true; otherwise the result is a
    world of one rank, and mpi4py is not imported.
    timeout: seconds a collective may wait (None: ``RNNCORE_MPI_TIMEOUT`` or 300).
    Raises ImportError naming mpi4py when MPI is needed and mpi4py is missing.
    """
    if comm is None and not (require or in_mpi_environment()):
        return World(None, timeout=timeout)
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("rnncore.distributed: MPI training needs mpi4py (pip install mpi4py, and an MPI "
                          f"library such as Debian's openmpi-bin libopenmpi-dev): {exc}") from None
    return World(MPI.COMM_WORLD if comm is None else comm, timeout=timeout)


class World:
    """Rank, size and local rank of one process, and the collectives the Trainer uses.

    World(None) is the world of one process (no MPI): every collective is the identity.
    """

    def __init__(self, comm=None, *, timeout=None):
        self.comm = comm
        if timeout is None:
            timeout = _timeout_from_env()
        if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0):
            raise ValueError(f"World: timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self.comm_seconds = 0.0   # wall time spent in gradient allreduces (waiting included)
        self.comm_bytes = 0       # bytes of the gradient buffers allreduced
        self.allreduces = 0
        self._flat = None         # the flat gradient buffer, allocated once per layout
        self._layout = None
        if comm is None:
            self.rank, self.size, self.local_rank, self.local_size = 0, 1, 0, 1
            return
        from mpi4py import MPI

        self._MPI = MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"

    @property
    def is_root(self):
        return self.rank == 0

    # -- sharding ----------------------------------------------------------------------------
    def shard(self, n):
        """(lo, hi): this rank's contiguous slice of n items, ``[n*r//N, n*(r+1)//N)``."""
        n = check_int(n, "n", "World.shard", minimum=0)
        return n * self.rank // self.size, n * (self.rank + 1) // self.size

    # -- failure -----------------------------------------------------------------------------
    def abort(self, message, code=1):
        """Print `message` (naming this rank) on stderr and end every rank of the job (MPI_Abort)."""
        print(f"rnncore.distributed: rank {self.rank} of {self.size}: {message}", file=sys.stderr, flush=True)
        if self.comm is not None:
            self.comm.Abort(code)
        raise DistributedError(message)

    @contextlib.contextmanager
    def abort_on_error(self):
        """Any exception inside (in a world of more than one rank) -> its message, then MPI_Abort."""
        if self.size == 1:
            yield
            return
        try:
            yield
        except BaseException as exc:  # noqa: BLE001 - every failure must stop the other ranks
            if isinstance(exc, DistributedError):
                raise
            self.abort(f"failed: {type(exc).__name__}: {exc}")

    def _wait(self, request, what):
        """Wait for a non-blocking collective, at most self.timeout seconds, then abort."""
        start = time.perf_counter()
        deadline = start + self.timeout
        spins = 0
        while not request.Test():
            spins += 1
            now = time.perf_counter()
            if now > deadline:
                self.abort(f"{what} did not complete within {self.timeout:g} s ({TIMEOUT_ENV}): another rank "
                           "died, hangs or stopped early")
            if now - start > 0.01:  # a long wait: stop spinning at full speed
                time.sleep(1e-4 if spins < 10000 else 1e-3)

    # -- broadcast ---------------------------------------------------------------------------
    def broadcast_array(self, array, what="broadcast"):
        """Rank 0's values into `array` (contiguous, the same shape and dtype on every rank), in place."""
        if self.comm is None:
            return array
        if not array.flags.c_contiguous:
            raise ValueError(f"World.broadcast_array: the array of {what} must be C-contiguous")
        self._wait(self.comm.Ibcast(array, root=0), what)
        return array

    def broadcast_object(self, obj, what="broadcast"):
        """Rank 0's `obj` (small and picklable: structure, not tensors) on every rank."""
        if self.comm is None:
            return obj
        # a bounded wait first: a barrier that polls, then the (small) pickled broadcast
        self._wait(self.comm.Ibarrier(), what)
        return self.comm.bcast(obj, root=0)

    def gather_objects(self, obj, what="gather"):
        """[obj of rank 0, rank 1, ...] on rank 0 (None elsewhere); small picklable objects only."""
        if self.comm is None:
            return [obj]
        self._wait(self.comm.Ibarrier(), what)
        return self.comm.gather(obj, root=0)

    def broadcast_parameters(self, params):
        """Rank 0's values of every parameter, in place (buffer-method broadcasts)."""
        for i, p in enumerate(params):
            self.broadcast_array(p.data, f"the broadcast of parameter {i}")

    def broadcast_optimizer(self, optimizer):
        """Rank 0's optimizer state and options on every rank: the structure pickled, the arrays by Bcast."""
        if self.comm is None:
            return
        if self.is_root:
            sd = optimizer.state_dict()
            arrays = []
            meta_state = {}
            for k, entries in sd["state"].items():
                meta_state[k] = {}
                for name, v in entries.items():
                    if isinstance(v, np.ndarray):
                        meta_state[k][name] = ("__array__", len(arrays), v.shape, v.dtype.str)
                        arrays.append(np.ascontiguousarray(v))
                    else:
                        meta_state[k][name] = v
            meta = {"state": meta_state, "param_groups": sd["param_groups"]}
        else:
            meta, arrays = None, None
        meta = self.broadcast_object(meta, "the broadcast of the optimizer state")
        if self.is_root:
            for i, a in enumerate(arrays):
                self.broadcast_array(a, f"the broadcast of optimizer array {i}")
            return
        state = {}
        for k, entries in meta["state"].items():
            state[k] = {}
            for name, v in entries.items():
                if isinstance(v, tuple) and len(v) == 4 and v[0] == "__array__":
                    a = np.empty(v[2], dtype=np.dtype(v[3]))
                    self.broadcast_array(a, f"the broadcast of optimizer array {v[1]}")
                    state[k][name] = a
                else:
                    state[k][name] = v
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})

    # -- gradients ---------------------------------------------------------------------------
    def _buffer(self, grads):
        layout = tuple((g.shape, g.dtype.str) for g in grads)
        if layout != self._layout:
            if not grads:
                raise DistributedError("World.allreduce_gradients: the model has no parameters with gradients "
                                       "(params gave none): there is nothing to average over the ranks")
            dtypes = {g.dtype for g in grads}
            if len(dtypes) != 1:
                raise DistributedError(f"World.allreduce_gradients: the gradients have several dtypes "
                                       f"{sorted(str(d) for d in dtypes)}; one flat buffer needs one")
            n = sum(g.size for g in grads)
            self._flat = np.empty(n + 3, dtype=grads[0].dtype)  # + loss sum, count, clock
            self._layout = layout
        return self._flat

    def allreduce_gradients(self, params, loss, count, clock=0.0, step=None):
        """Average the gradients of `params` over the ranks, weighted by each rank's `count`, in
        place; returns (global mean loss, global count, mean clock over the ranks).

        loss: this rank's mean loss over its `count` tokens/examples (count 0: an empty slice, its
        gradients zero). The gradients, loss sum, count and clock travel in one flat buffer summed
        by one Iallreduce; the gradients come back divided by the global count.
        """
        fn = "World.allreduce_gradients"
        loss = check_real(loss, "loss", fn)
        count = check_int(count, "count", fn, minimum=0)
        clock = check_real(clock, "clock", fn, finite=True)
        if self.comm is None:
            return float(loss), count, clock
        grads = [p.grad for p in params if p.grad is not None]
        flat = self._buffer(grads)
        off = 0
        c = float(count)
        for g in grads:  # flat = count * grad, gradient by gradient
            n = g.size
            np.multiply(g.reshape(-1), c, out=flat[off:off + n])
            off += n
        flat[off:] = (float(loss) * c if count else 0.0, c, clock)
        t0 = time.perf_counter()
        what = "the gradient allreduce" + ("" if step is None else f" of step {step}")
        self._wait(self.comm.Iallreduce(self._MPI.IN_PLACE, flat, op=self._MPI.SUM), what)
        self.comm_seconds += time.perf_counter() - t0
        self.comm_bytes += flat.nbytes
        self.allreduces += 1
        loss_sum, total, clock_sum = (float(v) for v in flat[off:])
        if total <= 0:
            raise DistributedError("World.allreduce_gradients: no rank had any token or example in this batch")
        inv = 1.0 / total
        off = 0
        for g in grads:
            n = g.size
            np.multiply(flat[off:off + n], inv, out=g.reshape(-1))
            off += n
        return loss_sum / total, int(round(total)), clock_sum / self.size

    def gradient_bytes(self, params):
        """Bytes of the flat buffer one step allreduces (the gradients + 3 scalars); 0 when `params`
        has no gradients (a model without parameters: there is no buffer to allreduce)."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return 0
        return (sum(g.size for g in grads) + 3) * grads[0].dtype.itemsize

    # -- the LM's carried state --------------------------------------------------------------
    def gather_columns(self, array, total, what="gather"):
        """The (..., total, ...) array whose axis-1 columns are every rank's `array` (its shard of
        `total`), on rank 0 (None elsewhere). array: (A, b_r, ...) with b_r = this rank's share."""
        if self.comm is None:
            return array
        moved = np.ascontiguousarray(np.moveaxis(array, 1, 0))  # (b_r, A, ...): rank blocks are contiguous
        row = int(np.prod(moved.shape[1:], dtype=np.int64))
        counts = [(total * (r + 1) // self.size - total * r // self.size) * row for r in range(self.size)]
        displs = [total * r // self.size * row for r in range(self.size)]
        if self.is_root:
            out = np.empty((total,) + moved.shape[1:], dtype=moved.dtype)
            recv = [out, (counts, displs)]
        else:
            out, recv = None, None
        self._wait(self.comm.Igatherv(moved, recv, root=0), what)
        return None if out is None else np.moveaxis(out, 0, 1)

    # -- random generators ------------------------------------------------------------------
    def rank_generator_states(self, states):
        """Rank 0's generator states -> this rank's: each generator's bit generator jumped `rank`
        times (PCG64, Philox, MT19937 jump; others are re-seeded from their state and the rank)."""
        if self.rank == 0:
            return states
        out = {}
        for name, st in states.items():
            cls = getattr(np.random, st["bit_generator"])
            bg = cls()
            bg.state = st
            if hasattr(bg, "jumped"):
                out[name] = bg.jumped(self.rank).state
            else:
                words = [int(v) & 0xFFFFFFFF for v in _flatten_ints(st)]
                out[name] = cls(np.random.SeedSequence(words + [self.rank])).state
        return out


def _flatten_ints(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _flatten_ints(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _flatten_ints(v)
    elif isinstance(obj, (int, np.integer)) and not isinstance(obj, bool):
        yield int(obj)
