"""Penn Treebank word language model: Zaremba, Sutskever & Vinyals (2014), "small" or "medium".

    python examples/ptb_zaremba.py                       # small: 2x200 LSTM, 13 epochs (paper: valid ~120, test ~115)
    python examples/ptb_zaremba.py --size medium         # 2x650, dropout 0.5, 39 epochs (paper: valid 86.2, test 82.7)
    python examples/ptb_zaremba.py --max-minutes 5       # a short run (or --epochs 1)

The recipe, as in the paper: Mikolov's PTB split (10k words, <eos> per line), an LSTM unrolled
T=20 steps over B=20 streams with the hidden state carried across windows (truncated BPTT),
plain SGD at learning rate 1 held for 4 (medium: 6) epochs and then divided by 2 (medium: 1.2)
every epoch (rnncore.optim.ZarembaLR), gradient norm clipped at 5, every parameter initialised
from U(-0.1, 0.1) (medium: U(-0.05, 0.05)), dropout only in the medium model (on the
embeddings, between the layers and before the softmax). Prints the wall time and the final
validation and test perplexities. Needs the corpus: python -m rnncore.datasets install
"""
import argparse
import os
import sys
import time

import numpy as np

import rnncore
from rnncore import datasets, optim
from rnncore.data import WordTokenizer
from rnncore.nn import LanguageModel
from rnncore.trainer import Trainer

SIZES = {  # hidden, dropout, epochs, constant_epochs, factor, init
    "small": dict(hidden=200, dropout=0.0, epochs=13, constant_epochs=4, factor=0.5, init=0.1),
    "medium": dict(hidden=650, dropout=0.5, epochs=39, constant_epochs=6, factor=1 / 1.2, init=0.05),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=SIZES, default="small")
    ap.add_argument("--epochs", type=int, default=None, help="default: the paper's (13 small, 39 medium)")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop training after this long")
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=20)
    ap.add_argument("--eval-batch-size", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1.0, help="the paper's (for its loss summed over time)")
    ap.add_argument("--clip", type=float, default=5.0, help="the paper's (for its loss summed over time)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="checkpoints and metrics.jsonl (default: none written)")
    ap.add_argument("--log-every", type=int, default=200)
    args = ap.parse_args()
    cfg = SIZES[args.size]
    epochs = args.epochs or cfg["epochs"]
    if args.threads is not None:
        rnncore.set_num_threads(args.threads)

    try:
        ptb = datasets.ptb()
    except datasets.MissingCorpusError as exc:
        sys.exit(str(exc))
    tok = WordTokenizer.from_text(ptb["train"])
    train, valid, test = (tok.encode(ptb[k]) for k in ("train", "valid", "test"))

    H = cfg["hidden"]
    model = LanguageModel(tok.vocab_size, H, H, num_layers=2, dropout=cfg["dropout"], seed=args.seed)
    rng = np.random.default_rng(args.seed)
    for p in model.parameters():  # the paper's initialisation, for every parameter
        p.data[...] = rng.uniform(-cfg["init"], cfg["init"], p.data.shape)
    # The paper's loss is the sum over the T unrolled steps of each step's batch-mean loss; the
    # Trainer's loss is the mean over all T * B tokens, T times smaller. The same updates then
    # need lr * T and a clipping threshold of clip / T (as PyTorch's word_language_model does
    # with lr 20 and clip 0.25 for T = 20).
    opt = optim.SGD(model.parameters(), lr=args.lr * args.seq_len)
    sched = optim.ZarembaLR(opt, constant_epochs=cfg["constant_epochs"], factor=cfg["factor"])
    trainer = Trainer(model, opt, sched, clip_grad_norm=args.clip / args.seq_len, batch_size=args.batch_size, seq_len=args.seq_len,
                      eval_batch_size=args.eval_batch_size, tokenizer=tok, checkpoint_dir=args.out,
                      log_every=args.log_every)
    print(f"PTB {args.size}: 2x{H} LSTM, {sum(p.data.size for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"vocabulary {tok.vocab_size}; {train.size:,} training tokens; {epochs} epochs, "
          f"{rnncore.get_num_threads()} thread(s)", flush=True)
    t0 = time.perf_counter()
    result = trainer.fit(train, valid, epochs=epochs, max_minutes=args.max_minutes)
    train_time = time.perf_counter() - t0
    test_ev = trainer.evaluate(test)
    wall = time.perf_counter() - t0
    print(f"stopped: {result['stop']} after {result['steps']} steps ({result['epochs']} full epochs); "
          f"training and validation {train_time / 60:.1f} min, wall time {wall / 60:.1f} min")
    print(f"final valid perplexity {result['val_ppl']:.2f}, test perplexity {test_ev['ppl']:.2f} "
          f"(paper, {args.size}: valid {'~120' if args.size == 'small' else '86.2'}, "
          f"test {'~115' if args.size == 'small' else '82.7'})")
    if args.out:
        print(f"checkpoints and metrics in {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
