"""The command line's sequence-to-sequence commands: ``rnncore train-seq2seq`` and ``rnncore translate``.

    rnncore train-seq2seq bible --max-words 25 --max-minutes 30      # KJV -> Reina-Valera 1909 verses
    rnncore train-seq2seq bible --src es --tgt en --attention additive
    rnncore train-seq2seq my.en my.es                                # a user's parallel files
    rnncore train-seq2seq pairs.tsv --attention none                 # or one TSV of (source, target)
    rnncore translate run/best.safetensors "In the beginning God created the heaven and the earth."
    rnncore translate run/best.safetensors --input sentences.txt --beam 5 --n-best 3
    rnncore translate run/best.safetensors "..." --attention-png attn.png

Training runs through rnncore.Trainer with a Seq2SeqTask, so it has the progress bar, the
evaluations, best/last checkpoints (atomic), early stopping and exact resume of `rnncore train`.
At the end it decodes the test split (greedy and beam) and prints BLEU (sacrebleu, 13a) with
the token accuracy and perplexity; the figures also go into DIR/results.json.
"""
import json
import os
import time

METHODS = ("greedy", "beam", "sample")


def _pairs(args):
    """(name, ParallelCorpus) from the positional data arguments."""
    from . import datasets

    data = args.data
    if data == ["bible"]:
        corpus = datasets.bible_pairs(args.src, args.tgt, max_words=args.max_words or None, split_seed=args.split_seed)
        return f"bible {args.src}->{args.tgt}", corpus
    if len(data) == 1:
        pairs = datasets.read_tsv(data[0])
        name = data[0]
    elif len(data) == 2:
        pairs = datasets.parallel_files(data[0], data[1])
        name = f"{data[0]} -> {data[1]}"
    else:
        raise ValueError(f"train-seq2seq: data must be 'bible', one TSV file or two parallel files, got "
                         f"{len(data)} arguments")
    if args.max_words:
        pairs = [p for p in pairs if len(p[0].split()) <= args.max_words and len(p[1].split()) <= args.max_words]
    return name, datasets.split_pairs(pairs, seed=args.split_seed, name=name)


def _decode_split(model, dataset, method, beam, length_penalty, n=None):
    """(hypothesis strings, reference strings, seconds, tokens generated) of a dataset's pairs."""
    pairs = dataset.pairs if n is None else dataset.pairs[:n]
    ids = [dataset.source_ids(i) for i in range(len(pairs))]
    t0 = time.perf_counter()
    hyps = model.translate_ids(ids, bos=dataset.bos_id, eos=dataset.eos_id, method=method, beam_width=beam,
                               length_penalty=length_penalty)
    seconds = time.perf_counter() - t0
    texts = [dataset.decode_target(h[0].tokens) for h in hyps]
    tokens = sum(len(h[0].tokens) for h in hyps)
    return texts, [p[1] for p in pairs], seconds, tokens


def cmd_train_seq2seq(args):
    import numpy as np

    from . import metrics, optim, set_num_threads
    from .data import PairBatcher, PairDataset, tokenizer_from_dict
    from .io import CheckpointError
    from .io import load as load_ckpt
    from .nn import Seq2Seq
    from .tasks import Seq2SeqTask
    from .trainer import Trainer

    if args.threads is not None:
        set_num_threads(args.threads)
    resume = load_ckpt(args.resume) if args.resume else None
    if resume is not None and resume.kind != "Seq2Seq":
        raise CheckpointError(f"{args.resume}: holds a {resume.kind} model, not a Seq2Seq; `rnncore train` resumes "
                              "language models")
    name, corpus = _pairs(args)
    if resume is not None:
        state = ((resume.extra or {}).get("task") or {}).get("state") or {}
        if not state.get("src_tokenizer") or not state.get("tgt_tokenizer"):
            raise CheckpointError(f"{args.resume}: no tokenizers in the checkpoint's task state")
        train = PairDataset(corpus.train, tokenizer_from_dict(state["src_tokenizer"]),
                            tokenizer_from_dict(state["tgt_tokenizer"]))
    else:
        train = PairDataset(corpus.train, min_freq=args.min_freq, max_size=args.max_vocab)
    valid, test = train.with_pairs(corpus.valid), train.with_pairs(corpus.test)
    if resume is not None:
        model = resume.build()
    else:
        model = Seq2Seq(train.src_vocab_size, train.tgt_vocab_size, embedding_dim=args.embed, hidden_size=args.hidden,
                        num_layers=args.layers, cell=args.cell, bidirectional=not args.unidirectional,
                        attention=None if args.attention == "none" else args.attention,
                        input_feed=not args.no_input_feed, bridge=args.bridge, dropout=args.dropout,
                        tie_weights=args.tie, src_padding_idx=train.src_pad_id, tgt_padding_idx=train.pad_id,
                        seed=args.seed)
    model.scheduled_sampling = args.scheduled_sampling
    opt = optim.Adam(model.parameters(), lr=args.lr)
    sched = optim.ReduceLROnPlateau(opt, factor=0.5, patience=1) if args.plateau else None
    bleu_n = args.bleu_sentences

    def valid_bleu(m):
        hyps, refs, _, _ = _decode_split(m, valid, "greedy", 1, 0.0, bleu_n)
        return metrics.bleu(hyps, refs)

    task = Seq2SeqTask(metric="bleu" if args.select == "bleu" else "loss", bleu=valid_bleu if bleu_n else None,
                       src_tokenizer=train.src_tokenizer, tgt_tokenizer=train.tgt_tokenizer)
    info = {"data": args.data, "src": args.src, "tgt": args.tgt, "max_words": args.max_words,
            "split_seed": args.split_seed}
    trainer = Trainer(model, opt, sched, clip_grad_norm=args.clip, task=task, eval_every=args.eval_every,
                      patience=args.patience, checkpoint_dir=args.out, checkpoint_every=args.checkpoint_every,
                      log_every=args.log_every, progress=False if args.no_progress else None, info=info)
    if resume is not None:
        trainer.load_checkpoint(args.resume)
    params = sum(p.data.size for p in model.parameters())
    batcher = PairBatcher(train, args.batch_size, seed=args.seed, max_src_len=args.max_len, max_tgt_len=args.max_len)
    d = model.decoder
    print(f"rnncore train-seq2seq: {name}: {len(corpus.train):,} / {len(corpus.valid):,} / {len(corpus.test):,} "
          f"pairs, vocabularies {train.src_vocab_size:,} / {train.tgt_vocab_size:,}; "
          f"{model.encoder.num_layers}x{model.encoder.hidden_size}{' bi' if model.encoder.bidirectional else ''}"
          f"-{d.cell.upper()} -> {d.num_layers}x{d.hidden_size}, attention {d.attention or 'none'}"
          f"{' (input feeding)' if d.input_feed else ''}, {params / 1e6:.2f}M parameters; batch {args.batch_size}"
          + (f"; stops after {args.max_minutes:g} min" if args.max_minutes else "")
          + f"; checkpoints in {args.out}/", flush=True)
    t0 = time.perf_counter()
    result = trainer.fit(batcher, PairBatcher(valid, 64, shuffle=False), epochs=args.epochs, max_steps=args.max_steps,
                         max_minutes=args.max_minutes)
    wall = time.perf_counter() - t0
    rate = trainer.tokens_seen / max(trainer.elapsed, 1e-9)
    print(f"done ({result['stop']}): {result['steps']} steps, {wall:.0f} s, {rate:,.0f} target tokens/s")
    best = os.path.join(args.out, "best.safetensors")
    if os.path.exists(best):  # evaluate the best model, not the last
        model = load_ckpt(best).build()
    model.eval()
    ev = task.evaluate(model, PairBatcher(test, 64, shuffle=False)) if len(test) else {}
    out = {"data": name, "pairs": [len(corpus.train), len(corpus.valid), len(corpus.test)],
           "attention": d.attention, "input_feed": d.input_feed, "steps": result["steps"], "train_seconds": wall,
           "train_tokens_per_s": rate, "test_loss": ev.get("loss"), "test_ppl": ev.get("ppl"),
           "test_accuracy": ev.get("accuracy")}
    if len(test):
        for method, beam in (("greedy", 1), ("beam", args.beam)):
            hyps, refs, secs, toks = _decode_split(model, test, method, beam, args.length_penalty)
            key = "greedy" if method == "greedy" else f"beam{beam}"
            out[f"bleu_{key}"] = metrics.bleu(hyps, refs)
            out[f"decode_{key}_seconds"] = secs
            out[f"decode_{key}_tokens_per_s"] = toks / max(secs, 1e-9)
        print(f"test: perplexity {ev['ppl']:.2f}, token accuracy {100 * ev['accuracy']:.1f}%, BLEU greedy "
              f"{out['bleu_greedy']:.2f} ({out['decode_greedy_seconds']:.1f} s), beam {args.beam} "
              f"{out[f'bleu_beam{args.beam}']:.2f} ({out[f'decode_beam{args.beam}_seconds']:.1f} s)")
        for i in range(min(3, len(test))):
            src, ref = test.pairs[i]
            print(f"  src: {src}\n  ref: {ref}\n  hyp: {model.translate(src, train.src_tokenizer, train.tgt_tokenizer, beam_width=args.beam, length_penalty=args.length_penalty)}")
    path = os.path.join(args.out, "results.json")
    from .io import atomic_write

    atomic_write(path, (json.dumps(out, indent=1, default=float) + "\n").encode())
    print(f"results: {path}")
    return 0 if np.isfinite(out.get("test_loss") or 0.0) else 1


def _load_seq2seq(path):
    from .data import tokenizer_from_dict
    from .io import CheckpointError
    from .io import load as load_ckpt

    ckpt = load_ckpt(path)
    if ckpt.kind != "Seq2Seq":
        raise CheckpointError(f"{path}: holds a {ckpt.kind or 'plain tensor'} checkpoint, not a Seq2Seq; translate "
                              "needs a checkpoint of `rnncore train-seq2seq`")
    state = ((ckpt.extra or {}).get("task") or {}).get("state") or {}
    if not state.get("src_tokenizer") or not state.get("tgt_tokenizer"):
        raise CheckpointError(f"{path}: the Seq2Seq checkpoint has no tokenizers (write it with rnncore.Trainer "
                              "and a Seq2SeqTask given src_tokenizer and tgt_tokenizer)")
    model = ckpt.build()
    model.src_tokenizer = tokenizer_from_dict(state["src_tokenizer"])
    model.tgt_tokenizer = tokenizer_from_dict(state["tgt_tokenizer"])
    return model.eval()


def cmd_translate(args):
    from . import set_num_threads

    if args.threads is not None:
        set_num_threads(args.threads)
    model = _load_seq2seq(args.checkpoint)
    sentences = list(args.sentences)
    if args.input:
        from .data import read_text

        sentences += [line.strip() for line in read_text(args.input).splitlines() if line.strip()]
    if not sentences:
        raise ValueError("translate: give sentences to translate, or --input FILE")
    kw = dict(method=args.method, beam_width=args.beam, length_penalty=args.length_penalty, max_len=args.max_len,
              seed=args.seed)
    if args.attention_png:
        if model.decoder.attention is None:
            raise ValueError("translate: --attention-png needs a model with attention; this one has none")
        from .diagnostics import plot_attention

        text, alpha, src_toks, tgt_toks = model.translate(sentences[0], return_attention=True, **kw)
        plot_attention(alpha, src_toks, tgt_toks, args.attention_png)
        print(f"attention heat-map of sentence 1: {args.attention_png}")
    out = model.translate(sentences, n_best=args.n_best, **kw)
    for s, t in zip(sentences, out):
        if args.n_best == 1:
            print(t)
        else:
            print(f"# {s}")
            for k, h in enumerate(t):
                print(f"{k + 1}\t{h}")
    return 0


def add_parsers(sub, positive, fraction, formatter):
    t = sub.add_parser("train-seq2seq", help="train an encoder-decoder with attention on sentence pairs",
                       description="Train an encoder-decoder (attention, teacher forcing) on the Bible verse pairs "
                       "or your own parallel text, then report BLEU on the test split.", formatter_class=formatter)
    t.add_argument("data", nargs="*", default=["bible"], metavar="DATA",
                   help="'bible' (KJV <-> Reina-Valera 1909, needs `rnncore datasets install`), a TSV of "
                        "source<TAB>target, or two parallel files (one sentence per line)")
    t.add_argument("--src", default="en", choices=("en", "es"), help="bible: source language")
    t.add_argument("--tgt", default="es", choices=("en", "es"), help="bible: target language")
    t.add_argument("--max-words", type=int, default=25, help="keep pairs with at most this many words "
                   "on each side (0: all)")
    t.add_argument("--split-seed", type=int, default=0, help="the fixed train/valid/test split's seed")
    t.add_argument("--min-freq", type=positive(int), default=2, help="words seen fewer times become <unk>")
    t.add_argument("--max-vocab", type=positive(int), default=None, help="largest vocabulary per side")
    g = t.add_argument_group("model")
    g.add_argument("--cell", type=str.lower, choices=("lstm", "gru", "rnn"), default="lstm")
    g.add_argument("--layers", type=positive(int), default=1, help="stacked layers (encoder and decoder)")
    g.add_argument("--hidden", type=positive(int), default=256, help="decoder hidden size (a bidirectional "
                   "encoder gets half per direction)")
    g.add_argument("--embed", type=positive(int), default=256, help="embedding size (both sides)")
    g.add_argument("--attention", choices=("none", "dot", "general", "additive"), default="general")
    g.add_argument("--no-input-feed", action="store_true", help="attention after the decoder RNN instead of "
                   "Luong's input feeding")
    g.add_argument("--unidirectional", action="store_true", help="a unidirectional encoder")
    g.add_argument("--bridge", choices=("auto", "concat", "linear", "zeros"), default="auto")
    g.add_argument("--dropout", type=fraction, default=0.2)
    g.add_argument("--tie", action="store_true", help="tie the generator to the target embedding")
    g.add_argument("--seed", type=int, default=0)
    o = t.add_argument_group("training")
    o.add_argument("--lr", type=positive(float), default=1e-3, help="Adam learning rate")
    o.add_argument("--plateau", action="store_true", help="halve the learning rate when validation stalls")
    o.add_argument("--clip", type=positive(float), default=5.0, help="clip the global gradient norm")
    o.add_argument("--scheduled-sampling", type=fraction, default=0.0, metavar="P",
                   help="feed the model's own prediction instead of the reference with probability P")
    o.add_argument("--batch-size", type=positive(int), default=32)
    o.add_argument("--max-len", type=positive(int), default=None, help="drop training pairs longer (tokens)")
    o.add_argument("--epochs", type=positive(int), default=10)
    o.add_argument("--max-steps", type=positive(int), default=None)
    o.add_argument("--max-minutes", type=positive(float), default=None, help="stop training after this long")
    o.add_argument("--patience", type=positive(int), default=None, help="early stopping (evaluations)")
    o.add_argument("--select", choices=("loss", "bleu"), default="loss", help="metric of the best checkpoint")
    o.add_argument("--bleu-sentences", type=int, default=0, metavar="N",
                   help="at each evaluation also decode N validation sentences (greedy) for BLEU")
    r = t.add_argument_group("run")
    r.add_argument("--beam", type=positive(int), default=5, help="beam width of the final test decoding")
    r.add_argument("--length-penalty", type=float, default=1.0, help="beam scores / length**this")
    r.add_argument("--threads", type=int, default=None)
    r.add_argument("--out", default="rnncore-seq2seq", metavar="DIR")
    r.add_argument("--resume", metavar="CKPT")
    r.add_argument("--eval-every", type=positive(int), default=None)
    r.add_argument("--checkpoint-every", type=positive(int), default=500)
    r.add_argument("--log-every", type=positive(int), default=50)
    r.add_argument("--no-progress", action="store_true")

    tr = sub.add_parser("translate", help="translate sentences with a train-seq2seq checkpoint",
                        formatter_class=formatter)
    tr.add_argument("checkpoint", metavar="CKPT")
    tr.add_argument("sentences", nargs="*", help="source sentences")
    tr.add_argument("--input", metavar="FILE", help="more source sentences, one per line")
    tr.add_argument("--method", choices=METHODS, default="beam")
    tr.add_argument("--beam", type=positive(int), default=5, help="beam width")
    tr.add_argument("--n-best", type=positive(int), default=1, help="translations per sentence (beam, sample)")
    tr.add_argument("--length-penalty", type=float, default=1.0, help="beam scores / length**this")
    tr.add_argument("--max-len", type=positive(int), default=None, help="most target tokens (default 2*S+10)")
    tr.add_argument("--seed", type=int, default=None, help="sampling seed")
    tr.add_argument("--attention-png", metavar="PNG", help="write the first sentence's attention heat-map")
    tr.add_argument("--threads", type=int, default=None)
    return {"train-seq2seq": cmd_train_seq2seq, "translate": cmd_translate}
