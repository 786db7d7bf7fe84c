"""int8 and bf16 inference (issue 16): batch-1 generation and batch-1 sequence scoring of the
char-LSTM, rnncore float32 / int8 / bf16 vs ONNX Runtime (float32 and quantize_dynamic int8) vs
PyTorch (float32, torch.ao quantize_dynamic int8, and .to(torch.bfloat16)), same weights, each
measurement in its own process, engines alternated over rounds, medians and ratios to rnncore
int8.

    python bench/quant_generate.py                       # 2x512 LSTM, V 75, E 64: 2 and 1 threads
    python bench/quant_generate.py --hidden 256 --rounds 3 --threads 2

Workloads:
  generate  greedy generation of --tokens tokens after a 1-token prime, batch 1: rnncore's C++
            loop (sampling.generate); the peers' usual loop, one session/forward call per token
            with the state fed back and the argmax in numpy/torch;
  score     teacher-forced logits of one --seq-len sequence, batch 1 (rnncore: model.forward;
            ONNX Runtime: the same graph over T steps; PyTorch: the module over the sequence).
Prints tokens/s per engine and the ratios. Before timing, each engine's scoring logits are
checked against rnncore float32's (largest difference, and how often the argmax agrees).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ENGINES = ("rnncore-fp32", "rnncore-int8", "rnncore-bf16", "ort-fp32", "ort-int8", "torch-fp32", "torch-int8",
           "torch-bf16")
ONNX_GATE_ORDER = (0, 3, 1, 2)  # PyTorch's i f g o -> ONNX's i o f c


def float_model(args):
    import numpy as np
    from rnncore import nn

    m = nn.LanguageModel(args.vocab, args.embed, args.hidden, num_layers=args.layers, seed=0).eval()
    rng = np.random.default_rng(1)  # weights of a trained model's scale (an untrained one is ~U(+-1/sqrt(H)))
    for p in m.parameters():
        p.data[...] = rng.normal(0, 0.08, p.data.shape)
    return m


def onnx_lm(model, T):
    """The LM as one ONNX graph: Gather -> L LSTM nodes (state in and out) -> MatMul + Add."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rnn, H, L, V = model.rnn, model.rnn.hidden_size, model.rnn.num_layers, model.vocab_size
    f32 = TensorProto.FLOAT

    def reorder(a):
        return np.concatenate([a[g * H:(g + 1) * H] for g in ONNX_GATE_ORDER])

    inputs = [helper.make_tensor_value_info("tok", TensorProto.INT64, [T, 1])]
    outputs = [helper.make_tensor_value_info("logits", f32, [T, 1, V])]
    inits = [numpy_helper.from_array(model.encoder.weight.data, "emb"),
             numpy_helper.from_array(np.ascontiguousarray(model.decoder.weight.data.T), "w_out"),
             numpy_helper.from_array(model.decoder.bias.data, "b_out"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [helper.make_node("Gather", ["emb", "tok"], ["x"], axis=0)]
    layer_in = "x"
    for k in range(L):
        w_ih, w_hh, b_ih, b_hh = (p.data for p in rnn.layer_parameters(k))
        inits += [numpy_helper.from_array(reorder(w_ih)[None], f"W{k}"),
                  numpy_helper.from_array(reorder(w_hh)[None], f"R{k}"),
                  numpy_helper.from_array(np.concatenate([reorder(b_ih), reorder(b_hh)])[None], f"B{k}")]
        inputs += [helper.make_tensor_value_info(n, f32, [1, 1, H]) for n in (f"h{k}", f"c{k}")]
        outputs += [helper.make_tensor_value_info(n, f32, [1, 1, H]) for n in (f"hn{k}", f"cn{k}")]
        nodes.append(helper.make_node("LSTM", [layer_in, f"W{k}", f"R{k}", f"B{k}", "", f"h{k}", f"c{k}"],
                                      [f"Y{k}", f"hn{k}", f"cn{k}"], hidden_size=H))
        nodes.append(helper.make_node("Squeeze", [f"Y{k}", "axis1"], [f"y{k}"]))
        layer_in = f"y{k}"
    nodes += [helper.make_node("MatMul", [layer_in, "w_out"], ["z"]), helper.make_node("Add", ["z", "b_out"], ["logits"])]
    graph = helper.make_graph(nodes, "char_lstm", inputs, outputs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="rnncore-bench")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def build(engine, workload, args, threads):
    """A zero-argument callable running the workload once (returns its output)."""
    import numpy as np

    model = float_model(args)
    L, H = args.layers, args.hidden
    n = args.tokens if workload == "generate" else args.seq_len
    seq = np.random.default_rng(2).integers(0, args.vocab, n)
    if engine.startswith("rnncore"):
        import rnncore
        from rnncore import sampling

        rnncore.set_num_threads(threads)
        precision = engine.split("-")[1]
        m = model if precision == "fp32" else rnncore.quantize(model, precision, threads=threads)
        m.threads = threads
        if workload == "generate":
            return lambda: sampling.generate(m, [int(seq[0])], n, temperature=0, threads=threads)
        return lambda: m.forward(seq[:, None])[0]
    if engine.startswith("ort"):
        import tempfile

        import onnx
        import onnxruntime as ort

        g = onnx_lm(model, "T")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        blob = g.SerializeToString()
        if engine == "ort-int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with tempfile.TemporaryDirectory() as tmp:
                src, dst = os.path.join(tmp, "f.onnx"), os.path.join(tmp, "q.onnx")
                onnx.save(g, src)
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
                with open(dst, "rb") as f:
                    blob = f.read()
        sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
        zeros = {f"{s}{k}": np.zeros((1, 1, H), np.float32) for k in range(L) for s in "hc"}
        if workload == "score":
            return lambda: sess.run(["logits"], {"tok": seq[:, None], **zeros})[0]
        names = ["logits"] + [f"{s}n{k}" for k in range(L) for s in "hc"]

        def gen():
            state, tok, out = dict(zeros), np.array([[seq[0]]], np.int64), []
            for _ in range(n):
                res = sess.run(names, {"tok": tok, **state})
                state = {f"{s}{k}": res[1 + 2 * k + j] for k in range(L) for j, s in enumerate("hc")}
                tok = np.array([[int(res[0][0, 0].argmax())]], np.int64)
                out.append(int(tok[0, 0]))
            return np.array(out)

        return gen
    import torch

    torch.set_num_threads(threads)
    tm = _torch_lm(model)
    if engine == "torch-int8":
        tm = torch.ao.quantization.quantize_dynamic(tm, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)
    elif engine == "torch-bf16":
        tm = tm.to(torch.bfloat16)
    if workload == "score":
        x = torch.from_numpy(seq[:, None])

        def score():
            with torch.inference_mode():
                return tm(x)[0].float().numpy()

        return score

    def gen():
        with torch.inference_mode():
            tok, state, out = torch.tensor([[int(seq[0])]]), None, []
            for _ in range(n):
                logits, state = tm(tok, state)
                tok = logits[-1].argmax(-1, keepdim=True)
                out.append(int(tok))
            return np.array(out)

    return gen


def _torch_lm(model):
    import torch

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(model.vocab_size, model.encoder.weight.data.shape[1])
            self.rnn = torch.nn.LSTM(self.emb.embedding_dim, model.rnn.hidden_size, model.rnn.num_layers)
            self.out = torch.nn.Linear(model.rnn.hidden_size, model.vocab_size)

        def forward(self, x, state=None):
            y, state = self.rnn(self.emb(x), state)
            return self.out(y), state

    lm = LM().eval()
    sd = {"emb.weight": model.encoder.weight.data, "out.weight": model.decoder.weight.data,
          "out.bias": model.decoder.bias.data}
    sd.update({"rnn." + k.split(".", 1)[1]: v for k, v in model.state_dict().items() if k.startswith("rnn.")})
    lm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()})
    return lm


def child(args):
    fn = build(args.engine, args.workload, args, args.threads)
    out = fn()  # warm: packing, sessions, thread pools
    times = []
    start = time.perf_counter()
    while len(times) < args.reps or (time.perf_counter() - start < 1.0 and len(times) < 20):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    n = args.tokens if args.workload == "generate" else args.seq_len
    import numpy as np

    if args.save:
        np.save(args.save, np.asarray(out))
    print(json.dumps({"tokens_per_s": n / statistics.median(times)}))


def available(engine):
    import importlib.util

    need = {"ort": "onnxruntime", "torch": "torch"}.get(engine.split("-")[0])
    return need is None or importlib.util.find_spec(need) is not None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=75)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=1000, help="generated tokens per timed run (the decoder is built in each)")
    ap.add_argument("--seq-len", type=int, default=300, help="scored tokens per timed run")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (each engine once per round)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--workloads", nargs="+", default=["generate", "score"], choices=["generate", "score"])
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine:
        args.threads = args.threads[0]
        return child(args)
    sys.path.insert(0, HERE)
    from compare import host_description, load_average

    engines = [e for e in args.engines if available(e)]
    print(f"host: {host_description()}")
    print(f"python {platform.python_version()}; load average at start {load_average()}; model {args.layers}x"
          f"{args.hidden} LSTM, E {args.embed}, V {args.vocab}; {args.rounds} rounds, medians")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + ([os.environ["PYTHONPATH"]] if
                                                                 os.environ.get("PYTHONPATH") else [])))

    def command(e, workload, threads, reps):
        cmd = [sys.executable, os.path.abspath(__file__), "--engine", e, "--workload", workload,
               "--threads", str(threads), "--reps", str(reps)]
        for k in ("vocab", "embed", "hidden", "layers", "tokens", "seq_len"):
            cmd += ["--" + k.replace("_", "-"), str(getattr(args, k))]
        return cmd

    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        outs = {}
        for e in engines:
            path = os.path.join(tmp, e + ".npy")
            r = subprocess.run(command(e, "score", 1, 1) + ["--save", path], env=env, capture_output=True, text=True)
            if r.returncode == 0:
                outs[e] = np.load(path).reshape(args.seq_len, -1)
        ref = outs.get("rnncore-fp32")
        for e, out in outs.items():
            if ref is not None and e != "rnncore-fp32":
                agree = float(np.mean(out.argmax(-1) == ref.argmax(-1)))
                print(f"check {e}: max |logit - rnncore fp32| {np.abs(out - ref).max():.4f} "
                      f"(logits up to {np.abs(ref).max():.2f}); argmax agrees at {100 * agree:.1f}% of steps")
    for workload in args.workloads:
        for threads in args.threads:
            rates = {e: [] for e in engines}
            for _ in range(args.rounds):
                for e in engines:
                    r = subprocess.run(command(e, workload, threads, args.reps), env=env, capture_output=True,
                                       text=True)
                    if r.returncode != 0:
                        print(f"  {e}: failed: {r.stderr.strip().splitlines()[-1] if r.stderr else '?'}")
                        continue
                    rates[e].append(json.loads(r.stdout.strip().splitlines()[-1])["tokens_per_s"])
            base = statistics.median(rates["rnncore-int8"]) if rates.get("rnncore-int8") else None
            print(f"\n{workload}, batch 1, {threads} thread(s) (load {load_average()}):")
            print("| engine | tokens/s | rnncore int8 / engine |")
            print("|---|---:|---:|")
            for e in engines:
                if not rates[e]:
                    continue
                med = statistics.median(rates[e])
                ratio = f"{base / med:.2f}x" if base else "-"
                print(f"| {e} | {med:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
