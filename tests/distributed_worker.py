"""A training run for tests/test_distributed.py, run in-process (one rank) or under mpirun.

    mpirun -n 2 python3 tests/distributed_worker.py '{"kind": "lm", "steps": 5, "out": "run.npz"}'

The JSON config (or a list of them, run one after the other): kind ('lm' an LSTM language model, 'clf' a sequence classifier), dtype
('float64'/'float32'), steps, batch (the global batch), checkpoint_dir, checkpoint_every, resume
(a checkpoint path), out (rank 0 writes the parameters there as .npz, with the losses), and the
failures to inject on rank `fail_rank` at step `fail_step`: fail = 'kill' (SIGKILL itself),
'hang' (sleep for an hour), 'raise' (a ValueError); eval_every, patience, plateau (a
ReduceLROnPlateau scheduler), skew_eval (each rank's evaluation gives another loss: rank 0's
improves, the others' do not) and report (each rank prints its evaluation decisions on stderr).
"""
import json
import os
import signal
import sys
import time

import numpy as np

import rnncore
from rnncore import distributed, optim
from rnncore.nn import LanguageModel, SequenceClassifier
from rnncore.tasks import ClassificationTask, LanguageModelTask
from rnncore.trainer import Trainer

V, E, H, L, T = 11, 5, 7, 2, 6


def _failing(base):
    class Failing(base):
        """Injects the configured failure into one rank's training step."""
        fail = None
        skew_eval = False

        def train_batch(self, model, batch):
            cfg = self.fail
            if cfg and self.trainer.world is not None and self.trainer.world.rank == cfg["fail_rank"] \
                    and self.trainer.step + 1 == cfg["fail_step"]:
                if cfg["fail"] == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                elif cfg["fail"] == "hang":
                    time.sleep(3600)
                else:
                    raise ValueError(f"injected failure at step {cfg['fail_step']}")
            return super().train_batch(model, batch)

        def evaluate(self, model, data, batch_size=None):
            ev = super().evaluate(model, data, batch_size)
            world = self.trainer.world
            if self.skew_eval and world is not None:  # ranks that disagree: rank 0 improves, the others never do
                self.evals = getattr(self, "evals", 0) + 1
                ev["loss"] = 10.0 - self.evals if world.is_root else 10.0 + self.evals
            return ev
    return Failing


def data(kind, seed=1):
    rng = np.random.default_rng(seed)
    if kind == "lm":
        return rng.integers(0, V, 400), rng.integers(0, V, 60)
    lengths = rng.integers(1, 9, 40)
    seqs = [rng.integers(1, V, n) for n in lengths]
    labels = rng.integers(0, 3, 40)
    return (seqs, labels), (seqs[:10], labels[:10])


def build(cfg, world=None, stream=None):
    dtype = np.dtype(cfg.get("dtype", "float64")).type
    kind = cfg.get("kind", "lm")
    batch = cfg.get("batch", 4)
    if kind == "lm":
        model = LanguageModel(V, E, H, num_layers=L, dtype=dtype, seed=3)
        task = _failing(LanguageModelTask)(batch, T)
    else:
        model = SequenceClassifier(V, E, H, 3, num_layers=1, dtype=dtype, seed=3, pooling="mean")
        task = _failing(ClassificationTask)(batch, seed=5, eval_batch_size=16, metric="loss")
    task.fail = cfg if cfg.get("fail") else None
    task.skew_eval = bool(cfg.get("skew_eval"))
    opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)  # scale-sensitive (Adam would hide a wrong average)
    # clipping (after the allreduce) is active on some steps and not on others
    scheduler = optim.ReduceLROnPlateau(opt, factor=0.5, patience=0) if cfg.get("plateau") else None
    trainer = Trainer(model, opt, scheduler, clip_grad_norm=0.2 if kind == "lm" else 0.5, task=task,
                      eval_every=cfg.get("eval_every"), patience=cfg.get("patience"),
                      checkpoint_dir=cfg.get("checkpoint_dir"),
                      checkpoint_every=cfg.get("checkpoint_every"), log_every=1, progress=False, threads=1,
                      stream=stream, distributed=world)
    return model, trainer


def run(cfg, world=None, stream=None):
    """Train as `cfg` says; returns {parameter name: array} and the per-step losses."""
    rnncore.set_num_threads(1)
    model, trainer = build(cfg, world, stream)
    if cfg.get("resume"):
        trainer.load_checkpoint(cfg["resume"])
    train, valid = data(cfg.get("kind", "lm"))
    trainer.result = trainer.fit(train, valid, epochs=100, max_steps=cfg["steps"])
    return {name: p.data.copy() for name, p in model.named_parameters()}, trainer


def main():
    cfgs = json.loads(sys.argv[1])
    world = distributed.init(require=True)
    for cfg in cfgs if isinstance(cfgs, list) else [cfgs]:  # several runs share one mpirun's start-up
        params, trainer = run(cfg, world)
        if world.is_root and cfg.get("out"):
            np.savez(cfg["out"], **params)
        print(f"worker rank {world.rank} of {world.size} done at step {trainer.step}", file=sys.stderr, flush=True)
        if cfg.get("report"):  # what the evaluations decided on this rank
            report = {"rank": world.rank, "lr": trainer._lr(), "best_score": trainer.best_score,
                      "best_epoch": trainer.best_epoch, "bad_evals": trainer.bad_evals, "stop": trainer.result["stop"],
                      "val_loss": trainer.result.get("val_loss")}
            # one write with its newline: print() writes the newline separately, and two ranks' reports
            # could then share a line of mpirun's merged output
            sys.stderr.write("worker report " + json.dumps(report) + "\n")
            sys.stderr.flush()


if __name__ == "__main__":
    main()
