"""Character-level Shakespeare: a char-rnn style LSTM language model, with samples as it learns.

    python examples/char_shakespeare.py                          # 2x512 LSTM, Adam, ~30 min
    python examples/char_shakespeare.py --recipe karpathy        # char-rnn's defaults: 2x128, seq 50, batch 50, RMSprop
    python examples/char_shakespeare.py --hidden 256 --max-minutes 5

Data: Shakespeare's 38 plays (rnncore.datasets.shakespeare(): ~4.3M training characters, the
last 10% held out). Every recipe value is an option; the presets are
  default   2x512 LSTM, embedding 64, dropout 0.1, Adam lr 2e-3 halved when validation stops
            improving, clip 5, seq 100, batch 32, 30 minutes (aims at <= 1.50 nats/char on
            validation; the small-transformer baseline on this data is ~1.47)
  karpathy  2x128 LSTM, no dropout, RMSprop lr 2e-3 (alpha 0.95), seq 50, batch 50, clip 5,
            lr x0.97 per epoch after 10 epochs (char-rnn's train.lua defaults)
Prints samples while training, then the validation loss in nats/char (and bits/char) and the
wall time. Needs the corpus: python -m rnncore.datasets install
"""
import argparse
import sys
import time

import rnncore
from rnncore import datasets, optim
from rnncore.data import CharTokenizer
from rnncore.nn import LanguageModel
from rnncore.trainer import Trainer

RECIPES = {
    "default": dict(hidden=512, layers=2, embed=64, dropout=0.1, optimizer="adam", lr=2e-3, seq_len=100,
                    batch_size=32, clip=5.0, schedule="plateau", max_minutes=30.0, epochs=50),
    "karpathy": dict(hidden=128, layers=2, embed=128, dropout=0.0, optimizer="rmsprop", lr=2e-3, seq_len=50,
                     batch_size=50, clip=5.0, schedule="karpathy", max_minutes=None, epochs=50),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", choices=RECIPES, default="default")
    for name, kind in (("hidden", int), ("layers", int), ("embed", int), ("dropout", float), ("lr", float),
                       ("seq-len", int), ("batch-size", int), ("clip", float), ("epochs", int),
                       ("max-minutes", float)):
        ap.add_argument("--" + name, type=kind, default=None, help="default: the recipe's")
    ap.add_argument("--optimizer", choices=("adam", "rmsprop", "sgd"), default=None)
    ap.add_argument("--cell", choices=("lstm", "gru", "rnn"), default="lstm")
    ap.add_argument("--eval-every", type=int, default=1000, help="evaluate every N steps (and at epoch ends)")
    ap.add_argument("--eval-chars", type=int, default=None, help="evaluate on the first N validation chars")
    ap.add_argument("--sample-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="checkpoints and metrics.jsonl (default: none written)")
    ap.add_argument("--log-every", type=int, default=100)
    args = ap.parse_args()
    cfg = dict(RECIPES[args.recipe])
    for key in cfg:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    if args.threads is not None:
        rnncore.set_num_threads(args.threads)

    try:
        text = datasets.shakespeare()
    except datasets.MissingCorpusError as exc:
        sys.exit(str(exc))
    tok = CharTokenizer.from_text(text["text"])
    train, valid = tok.encode(text["train"]), tok.encode(text["valid"])
    if args.eval_chars:
        valid = valid[:args.eval_chars + 1]

    model = LanguageModel(tok.vocab_size, cfg["embed"], cfg["hidden"], num_layers=cfg["layers"], cell=args.cell,
                          dropout=cfg["dropout"], seed=args.seed)
    if cfg["optimizer"] == "adam":
        opt = optim.Adam(model.parameters(), lr=cfg["lr"])
    elif cfg["optimizer"] == "rmsprop":
        opt = optim.RMSprop(model.parameters(), lr=cfg["lr"], alpha=0.95)
    else:
        opt = optim.SGD(model.parameters(), lr=cfg["lr"])
    if cfg["schedule"] == "plateau":
        sched = optim.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    else:  # char-rnn: learning_rate_decay 0.97 every epoch after epoch 10
        sched = optim.ZarembaLR(opt, constant_epochs=10, factor=0.97)
    trainer = Trainer(model, opt, sched, clip_grad_norm=cfg["clip"], batch_size=cfg["batch_size"],
                      seq_len=cfg["seq_len"], eval_every=args.eval_every, tokenizer=tok, checkpoint_dir=args.out,
                      log_every=args.log_every, sample_every=args.sample_every, sample_length=300,
                      sample_prime="ROMEO:\n")
    print(f"Shakespeare ({args.recipe}): {cfg['layers']}x{cfg['hidden']} {args.cell.upper()}, "
          f"{sum(p.data.size for p in model.parameters()) / 1e6:.2f}M parameters, {tok.vocab_size} characters; "
          f"{train.size:,} training / {valid.size:,} validation chars; {type(opt).__name__} lr {cfg['lr']:g}, "
          f"batch {cfg['batch_size']} x {cfg['seq_len']}; {rnncore.get_num_threads()} thread(s)"
          + (f"; {cfg['max_minutes']:g} minutes" if cfg["max_minutes"] else ""), flush=True)
    t0 = time.perf_counter()
    result = trainer.fit(train, valid, epochs=cfg["epochs"], max_minutes=cfg["max_minutes"])
    wall = time.perf_counter() - t0
    print(trainer.sample(length=500, prime="ROMEO:\n", seed=0))
    print(f"stopped: {result['stop']} after {result['steps']} steps; wall time {wall / 60:.1f} min, "
          f"{trainer.tokens_seen / max(trainer.elapsed, 1e-9) / 1e3:.1f}k chars/s")
    best = result["best_val_loss"]
    print(f"validation: {result['val_loss']:.4f} nats/char ({result['val_bpc']:.4f} bits/char)"
          + (f", best {best:.4f} nats/char" if best < float("inf") else ""))


if __name__ == "__main__":
    main()
