"""Side-by-side benchmark: rnncore against PyTorch (and numpy's sgemm) in the same run.

    python bench/compare.py                      # every workload, 1 and 2 threads
    python bench/compare.py --quick              # a few small workloads (smoke test)
    python bench/compare.py --only lstm --threads 2 --record
    python bench/compare.py --quick --baseline /tmp/old   # this build against another checkout, same run
    python bench/compare.py --peers --only gemm lstm gru --threads 2 1   # + ONNX Runtime, OpenVINO
    python bench/compare.py --peers --quick --engines ort      # the streaming and per-step rows, one peer
    python bench/compare.py --peers --precision bf16 --only gemm lstm gru   # bfloat16 against the bf16 peers
    python bench/compare.py --peers --precision int8     # = bench/quant_generate.py (int8 whole models)

This machine is shared and its speed drifts, so each engine runs in its own long-lived
worker process, the engines alternate round by round on every workload, and the table
quotes medians. The machine's own sgemm throughput (numpy matmul at 2048^3, same thread
count, OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset for that worker only) is measured in the
same run and gives the "% sgemm" column.

Workloads (T, B, I, H): a = (100, 64, 512, 512), b = (100, 16, 256, 256),
c = (100, 1, 256, 256), d = 2 layers (50, 32, 128, 1024); cells lstm, gru, rnn_tanh;
modes fwd (inference) and train (forward + backward); GEMM shapes M x K x N; variable
lengths (uniform in [10, 100] at T = 100) against the padded run; a char-LM (Embedding
65 -> 128, 2 x LSTM 512, Linear 512 -> 65) sampling 200 tokens at temperature 1 with 1 and 64
streams (PyTorch: the usual Python loop), and training it (B = 32, T = 128, Adam, clip 5).
`--only lstmp` adds the LSTM with projections (proj_size = H/4, PyTorch's LSTMP, which oneDNN
does not run: torch.nn.LSTM takes its native path) on the --shapes, fwd and train.

--peers (or --engines torch ort openvino) is the inference table instead: forward only, the shapes
above plus a streaming model (50, 1, 64, 64) and a per-step workload (T = 1, B = 1, H = 256, the
state carried through 1,000 calls: PyTorch, ONNX Runtime and OpenVINO feed it back call after call),
and rnncore's GEMM against numpy's sgemm. Every engine gets the same weights and inputs; each runs in
its own process with its thread count pinned (torch.set_num_threads, ORT intra_op_num_threads,
OpenVINO INFERENCE_NUM_THREADS, with INFERENCE_PRECISION_HINT f32: its default is bf16 on CPUs with
AVX-512 BF16 or AMX); every row checks each engine's output against rnncore's and the command exits 1
after the table on a mismatch. ONNX Runtime and OpenVINO run one ONNX graph built with onnx.helper.

--peers --precision bf16 is the same table in bfloat16 (issue 16): rnncore's layers with precision='bf16'
(operands rounded to bf16, float32 sums and cell state) and its bf16 GEMM, against PyTorch under
torch.autocast('cpu', torch.bfloat16) ("torch"), PyTorch with the layer and input converted once by
.to(torch.bfloat16) ("torch-bf16"; its outputs are bf16) and OpenVINO with INFERENCE_PRECISION_HINT bf16.
ONNX Runtime's CPU provider has no bfloat16 LSTM/GRU/RNN kernel. The per-step row runs rnncore's bf16
stream (layer.stream() of the bf16 layer). The GEMM rows are 6400x512x2048 and 2048^3 (rnncore's gemm_bf16
against torch.matmul on bf16 tensors). Every engine, rnncore's bf16 included, is checked against rnncore's
float32 output (within BF16_TOLERANCE); the "rnncore err" column is rnncore's own bf16 error.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1}
SHAPES = {  # name: (T, B, I, H, layers)
    "a": (100, 64, 512, 512, 1),
    "b": (100, 16, 256, 256, 1),
    "c": (100, 1, 256, 256, 1),
    "d": (50, 32, 128, 1024, 2),
}
# The char-LM of the generation and training workloads: Embedding 65 -> 128, 2 x LSTM 512, Linear 512 -> 65.
CHARLM = {"V": 65, "E": 128, "H": 512, "L": 2}
CHARLM_MACS = 4 * 512 * (128 + 512) + 4 * 512 * (512 + 512) + 65 * 512  # per token
GEMMS = {"2048^3": (2048, 2048, 2048), "6400x512x2048": (6400, 512, 2048), "64x512x2048": (64, 512, 2048),
         "1x512x2048": (1, 512, 2048)}


# --------------------------------------------------------------------------------------------
# Workloads: each is (name, kind, params, flop count); workers build and time them.
# --------------------------------------------------------------------------------------------
def rnn_flops(cell, T, B, I, H, layers, mode, P=0):
    """P > 0: an LSTM with projections (h is P wide; each step adds the (H -> P) product)."""
    G, R = GATES[cell], P or H
    fwd = sum(2.0 * T * B * (((I if l == 0 else R) + R) * G * H + (H * P)) for l in range(layers))
    return fwd if mode == "fwd" else 3.0 * fwd


def workloads(args):
    out = []
    if "gemm" in args.only:
        for name, (M, K, N) in GEMMS.items():
            out.append({"name": f"gemm {name}", "kind": "gemm", "M": M, "K": K, "N": N, "flops": 2.0 * M * K * N})
    for cell in ("lstm", "gru", "rnn_tanh"):
        if cell not in args.only:
            continue
        for shape in args.shapes:
            T, B, I, H, layers = SHAPES[shape]
            for mode in args.modes:
                out.append({"name": f"{cell} {shape} {mode}", "kind": "rnn", "cell": cell, "T": T, "B": B, "I": I,
                            "H": H, "layers": layers, "mode": mode,
                            "flops": rnn_flops(cell, T, B, I, H, layers, mode)})
    if "lstmp" in args.only:  # LSTM with projections, proj_size = H/4 (torch.nn.LSTM leaves oneDNN for these)
        for shape in args.shapes:
            T, B, I, H, layers = SHAPES[shape]
            for mode in args.modes:
                out.append({"name": f"lstmp {shape} {mode} P={H // 4}", "kind": "rnn", "cell": "lstm", "T": T,
                            "B": B, "I": I, "H": H, "P": H // 4, "layers": layers, "mode": mode,
                            "flops": rnn_flops("lstm", T, B, I, H, layers, mode, H // 4)})
    if "varlen" in args.only:
        T, B, I, H, layers = SHAPES["a"]
        for ragged in (False, True):
            out.append({"name": f"lstm a train {'lengths~U[10,100]' if ragged else 'padded'}", "kind": "rnn",
                        "cell": "lstm", "T": T, "B": B, "I": I, "H": H, "layers": 1, "mode": "train",
                        "ragged": ragged, "flops": rnn_flops("lstm", T, B, I, H, 1, "train")})
    if "gen" in args.only:
        for streams in (1, 64):
            out.append({"name": f"charlm sample B={streams}", "kind": "gen", "streams": streams, "new_tokens": 200,
                        "tokens": 200 * streams, "flops": 2.0 * 200 * streams * CHARLM_MACS})
    if "lmtrain" in args.only:
        T, B = 128, 32
        out.append({"name": "charlm train B=32 T=128 adam", "kind": "lmtrain", "T": T, "B": B, "tokens": T * B,
                    "flops": 6.0 * T * B * CHARLM_MACS})
    if args.quick:
        keep = {"gemm 64x512x2048", "lstm b fwd", "lstm b train", "gru c fwd", "rnn_tanh b train",
                "charlm sample B=1"}
        out = [w for w in out if w["name"] in keep]
    return out


def lengths_for(w):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(10, w["T"] + 1, size=w["B"]).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Workers: `python compare.py --serve ENGINE` reads JSON requests on stdin, answers on stdout.
# --------------------------------------------------------------------------------------------
def build_rnncore(w, threads):
    import numpy as np

    import rnncore
    from rnncore import _core, nn

    rng = np.random.default_rng(0)
    if w["kind"] in ("gen", "lmtrain"):
        return build_rnncore_lm(w, threads)
    if w["kind"] == "peer":
        return build_peer_rnncore(w, threads)
    if w["kind"] == "gemm":
        a = rng.standard_normal((w["M"], w["K"]), dtype=np.float32)
        b = rng.standard_normal((w["K"], w["N"]), dtype=np.float32)
        c = np.empty((w["M"], w["N"]), np.float32)
        if w.get("precision") == "bf16":  # operands rounded to bf16 as they are packed, float32 sums
            return lambda: _core.gemm_bf16(a, b, c=c, threads=threads)

        def gemm():
            _core.gemm(a, b, c, threads=threads)
            return c  # for the peers' correctness check (--peers)

        return gemm
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN}[w["cell"]]
    proj = {"proj_size": w["P"]} if w.get("P") else {}
    layer = cls(w["I"], w["H"], num_layers=w["layers"], seed=0, threads=threads, **proj)
    x = rng.standard_normal((w["T"], w["B"], w["I"]), dtype=np.float32)
    lengths = lengths_for(w) if w.get("ragged") else None
    if w["mode"] == "fwd":
        layer.eval()
        return lambda: layer(x, lengths=lengths)
    dy = rng.standard_normal((w["T"], w["B"], w.get("P") or w["H"]), dtype=np.float32)

    def train_step():
        layer(x, lengths=lengths)
        layer.backward(dy)

    return train_step


def build_rnncore_lm(w, threads):
    import numpy as np

    from rnncore import optim, sampling
    from rnncore.nn import LanguageModel

    c = CHARLM
    model = LanguageModel(c["V"], c["E"], c["H"], num_layers=c["L"], seed=0, threads=threads)
    rng = np.random.default_rng(0)
    if w["kind"] == "gen":
        model.eval()
        prime = rng.integers(0, c["V"], size=(w["streams"], 1))
        return lambda: sampling.generate(model, prime, w["new_tokens"], temperature=1.0, seed=1, threads=threads)
    opt = optim.Adam(model.parameters(), lr=2e-3, threads=threads)
    tokens = rng.integers(0, c["V"], size=(w["T"] + 1, w["B"]))
    state = [None]

    def train_step():
        loss, new_state = model.loss(tokens[:-1], tokens[1:], state[0])
        model.zero_grad()
        model.backward()
        optim.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        state[0] = new_state

    return train_step


def build_torch_lm(w, threads):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    c = CHARLM

    class CharLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Embedding(c["V"], c["E"])
            self.rnn = torch.nn.LSTM(c["E"], c["H"], num_layers=c["L"])
            self.decoder = torch.nn.Linear(c["H"], c["V"])

        def forward(self, x, state=None):
            out, state = self.rnn(self.encoder(x), state)
            return self.decoder(out), state

    model = CharLM()
    if w["kind"] == "gen":
        model.eval()
        g = torch.Generator().manual_seed(1)
        prime = torch.randint(0, c["V"], (1, w["streams"]), generator=g)

        def sample():  # the usual Python loop, one token per iteration
            with torch.inference_mode():
                x, state, out = prime, None, []
                for _ in range(w["new_tokens"]):
                    logits, state = model(x, state)
                    probs = torch.softmax(logits[-1], dim=-1)
                    x = torch.multinomial(probs, 1, generator=g).T
                    out.append(x)
                return torch.cat(out)

        return sample
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    tokens = torch.randint(0, c["V"], (w["T"] + 1, w["B"]))
    state = [None]

    def train_step():
        logits, new_state = model(tokens[:-1], state[0])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c["V"]), tokens[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        state[0] = tuple(s.detach() for s in new_state)

    return train_step


def build_torch(w, threads):
    import numpy as np
    import torch

    if w["kind"] in ("gen", "lmtrain"):
        return build_torch_lm(w, threads)
    if w["kind"] == "peer" or w.get("precision") == "bf16":
        return build_peer_torch(w, threads)
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    if w["kind"] == "gemm":
        raise SystemExit("gemm workloads compare against numpy, not torch")
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}[w["cell"]]
    layer = cls(w["I"], w["H"], num_layers=w["layers"], **({"proj_size": w["P"]} if w.get("P") else {}))
    x = torch.randn(w["T"], w["B"], w["I"], generator=g)
    inp = x
    if w.get("ragged"):
        lengths = torch.from_numpy(lengths_for(w))
        inp = None
    if w["mode"] == "fwd":
        def fwd():
            with torch.inference_mode():
                if w.get("ragged"):
                    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
                    return layer(packed)
                return layer(inp)
        return fwd
    x.requires_grad_(True)
    dy = torch.randn(w["T"], w["B"], w.get("P") or w["H"], generator=g)

    def train_step():
        layer.zero_grad(set_to_none=False)
        if w.get("ragged"):
            packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
            out, _ = layer(packed)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=w["T"])
        else:
            out, _ = layer(x)
        out.backward(dy)

    _ = np  # numpy is imported for parity with the other builders
    return train_step


def build_numpy(w, threads):
    import numpy as np

    # This worker was started with OPENBLAS_NUM_THREADS = threads (see Worker).
    rng = np.random.default_rng(0)
    M, K, N = (w["M"], w["K"], w["N"]) if w["kind"] == "gemm" else (2048, 2048, 2048)
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)
    c = np.empty((M, N), np.float32)
    return lambda: np.matmul(a, b, out=c)


# --------------------------------------------------------------------------------------------
# Peers (--peers / --engines): the inference runtimes beside PyTorch, forward only. Every engine
# gets the same weights and inputs (peer_data: numpy, seed 0, PyTorch's layout and gate order)
# and each row checks every engine's output against rnncore's before its times are trusted.
# --------------------------------------------------------------------------------------------
PEER_ENGINES = ("torch", "ort", "openvino", "torch-bf16")
PRECISION_ENGINES = {"fp32": ("torch", "ort", "openvino"), "bf16": ("torch", "torch-bf16", "openvino")}
PEER_LABELS = {"torch": "PyTorch", "ort": "ONNX Runtime", "openvino": "OpenVINO", "numpy": "numpy sgemm",
               "torch-bf16": "PyTorch .to(bf16)"}
BF16_LABELS = {"torch": "PyTorch autocast bf16", "openvino": "OpenVINO bf16"}  # the same engines' bf16 runs
PEER_MODULES = {"torch": ("torch",), "ort": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino"),
                "numpy": ("numpy",), "torch-bf16": ("torch",)}
STREAM_SHAPE = (50, 1, 64, 64)  # (T, B, I, H): a small streaming model
STEP_SHAPE = (1000, 1, 256, 256)  # (calls, B, I, H): one time step per call, the state carried
PEER_TOLERANCE = 2e-4  # max |engine - rnncore| / max(1, max |rnncore|), float32 throughout
# --precision bf16: max |engine - rnncore float32| / max(1, max |rnncore float32|). bf16 keeps 8 bits of
# mantissa (relative error 2^-9 per rounding); over 100 steps the outputs of every engine here stay
# within ~1e-2 of float32 (printed per row), so 5e-2 tells rounding apart from a wrong result.
BF16_TOLERANCE = 5e-2
BF16_GEMMS = ("6400x512x2048", "2048^3")
ONNX_OPS = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN"}
# PyTorch's gate blocks (LSTM i,f,g,o; GRU r,z,n) in ONNX's order (LSTM i,o,f,c; GRU z,r,h).
ONNX_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn_tanh": (0,)}


def peer_workloads(args):
    """The forward-only rows of the peer table: (T, B, I, H) shapes, the streaming model, the
    per-step workload, and numpy's sgemm against rnncore's GEMM."""
    out = []
    bf16 = args.precision == "bf16"
    extra = {"precision": "bf16"} if bf16 else {}
    if "gemm" in args.only:
        for name in (BF16_GEMMS if bf16 else ("6400x512x2048",)):
            M, K, N = GEMMS[name]
            out.append({"name": f"gemm {name}", "kind": "gemm", "M": M, "K": K, "N": N, **extra})
    for cell in ("lstm", "gru", "rnn_tanh"):
        if cell not in args.only:
            continue
        rows = [(f"{s} fwd", SHAPES[s]) for s in args.shapes] + [("stream", STREAM_SHAPE + (1,))]
        if args.quick:
            rows = rows[-1:]
        for label, (T, B, I, H, layers) in rows:
            shape = f"({T},{B},{I},{H})" + (f" x{layers}" if layers > 1 else "")
            out.append({"name": f"{cell} {label} {shape}", "kind": "peer", "cell": cell, "T": T, "B": B, "I": I,
                        "H": H, "layers": layers, "calls": 0, **extra})
        calls, B, I, H = STEP_SHAPE
        if args.quick:
            calls = 100
        out.append({"name": f"{cell} step (1,{B},{I},{H}) x{calls}, per call", "kind": "peer", "cell": cell,
                    "T": 1, "B": B, "I": I, "H": H, "layers": 1, "calls": calls, **extra})
    return out


def peer_data(w):
    """(params, x) for a peer workload: params[k] = (w_ih, w_hh, b_ih, b_hh) of layer k in
    PyTorch's layout, uniform in +-1/sqrt(H) as PyTorch initialises them; x (T, B, I), or
    (calls, B, I) for the per-step workload. w["perturb"] (the tests, --perturb) adds that much
    noise to every weight: the correctness check must then fail."""
    import numpy as np

    rng = np.random.default_rng(0)
    G, H, k = GATES[w["cell"]], w["H"], 1.0 / np.sqrt(w["H"])
    params = []
    for layer in range(w["layers"]):
        I = w["I"] if layer == 0 else H
        params.append(tuple(rng.uniform(-k, k, size).astype(np.float32)
                            for size in ((G * H, I), (G * H, H), (G * H,), (G * H,))))
    x = rng.standard_normal((w["calls"] or w["T"], w["B"], w["I"]), dtype=np.float32)
    if w.get("perturb"):
        noise = np.random.default_rng(1)
        params = [tuple((p + w["perturb"] * noise.standard_normal(p.shape)).astype(np.float32) for p in ps)
                  for ps in params]
    return params, x


def peer_state_dict(params):
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return {f"{n}_l{k}": a for k, ps in enumerate(params) for n, a in zip(names, ps)}


def build_peer_rnncore(w, threads):
    """Returns fn() -> (y, h_n[, c_n]); the per-step workload returns the last call's y and the final state."""
    from rnncore import nn

    params, x = peer_data(w)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN}[w["cell"]]
    layer = cls(w["I"], w["H"], num_layers=w["layers"], seed=0, threads=threads,
                precision=w.get("precision", "fp32"))
    layer.load_state_dict(peer_state_dict(params))
    layer.eval()
    lstm = w["cell"] == "lstm"

    def flat(y, state):
        return (y,) + (tuple(state) if lstm else (state,))

    if not w["calls"]:
        return lambda: flat(*layer(x))

    # The per-step workload through the streaming API (layer.stream(): weights packed once, the
    # state carried inside, no allocation per call), as a user feeding one step at a time would.
    stream = layer.stream(batch_size=w["B"], capacity=1, threads=threads)

    def steps():  # the state carried from call to call, from zeros
        stream.reset()
        for t in range(w["calls"]):
            y = stream.feed(x[t:t + 1])
        return flat(y.copy(), stream.state)

    return steps


def build_peer_torch(w, threads, cast=False):
    """PyTorch on a peer workload. w["precision"] == "bf16": under torch.autocast('cpu', bfloat16), or with
    cast=True (engine torch-bf16) the layer and input converted once with .to(torch.bfloat16); the GEMM
    rows are torch.matmul on bf16 operands (converted once). The outputs are returned as tensors (bf16
    ones too); serve() converts them to float32 numpy for the check."""
    import contextlib

    import numpy as np
    import torch

    torch.set_num_threads(threads)
    bf16 = w.get("precision") == "bf16"
    if cast and not bf16:
        raise ValueError("torch-bf16 runs the bf16 table only (--precision bf16)")
    if w["kind"] == "gemm":  # the same operands as rnncore's (build_rnncore)
        rng = np.random.default_rng(0)
        a = torch.from_numpy(rng.standard_normal((w["M"], w["K"]), dtype=np.float32))
        b = torch.from_numpy(rng.standard_normal((w["K"], w["N"]), dtype=np.float32))
        if not bf16:
            raise ValueError("the float32 GEMM rows compare against numpy, not torch")
        if cast:
            a, b = a.bfloat16(), b.bfloat16()

        def mm():
            with torch.inference_mode(), (contextlib.nullcontext() if cast else
                                          torch.autocast("cpu", dtype=torch.bfloat16)):
                return torch.matmul(a, b)
        return mm
    params, x = peer_data(w)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}[w["cell"]]
    layer = cls(w["I"], w["H"], num_layers=w["layers"])
    layer.load_state_dict({k: torch.from_numpy(v) for k, v in peer_state_dict(params).items()})
    layer.eval()
    x = torch.from_numpy(x)
    if cast:
        layer, x = layer.to(torch.bfloat16), x.to(torch.bfloat16)
    lstm = w["cell"] == "lstm"

    def context():
        if bf16 and not cast:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def flat(y, state):
        return (y,) + (tuple(state) if lstm else (state,))

    if not w["calls"]:
        def fwd():
            with torch.inference_mode(), context():
                return flat(*layer(x))
        return fwd

    def steps():
        with torch.inference_mode(), context():
            state = None
            for t in range(w["calls"]):
                y, state = layer(x[t:t + 1], state)
            return flat(y, state)

    return steps


def onnx_model(w, params):
    """The layer as an ONNX graph (onnx.helper, opset 17): one LSTM/GRU/RNN node per layer with
    the weights as initializers, reordered to ONNX's gate order; GRU with linear_before_reset=1
    (PyTorch's GRU applies r after the hidden matmul). Inputs x (T, B, I) and, for the per-step
    workload, h0 (and c0) (1, B, H); outputs y (T, B, H), h_n (and c_n) (L, B, H)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cell, H, L, B = w["cell"], w["H"], w["layers"], w["B"]
    T = 1 if w["calls"] else w["T"]
    lstm, stateful = cell == "lstm", bool(w["calls"])
    if stateful and L != 1:
        raise ValueError("onnx_model: the per-step workload has one layer")
    order = ONNX_GATE_ORDER[cell]

    def reorder(a):  # gate blocks of H rows: PyTorch's order -> ONNX's
        return np.concatenate([a[g * H:(g + 1) * H] for g in order])

    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("x", f32, [T, B, w["I"]])]
    if stateful:
        inputs += [helper.make_tensor_value_info(n, f32, [1, B, H]) for n in (("h0", "c0") if lstm else ("h0",))]
    outputs = [helper.make_tensor_value_info("y", f32, [T, B, H]), helper.make_tensor_value_info("h_n", f32, [L, B, H])]
    if lstm:
        outputs.append(helper.make_tensor_value_info("c_n", f32, [L, B, H]))
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes, layer_in, hs, cs = [], "x", [], []
    for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(params):
        W, R, Bias = f"W{k}", f"R{k}", f"B{k}"
        inits += [numpy_helper.from_array(reorder(w_ih)[None], W), numpy_helper.from_array(reorder(w_hh)[None], R),
                  numpy_helper.from_array(np.concatenate([reorder(b_ih), reorder(b_hh)])[None], Bias)]
        ins = [layer_in, W, R, Bias, ""] + (["h0"] + (["c0"] if lstm else []) if stateful else [])
        outs = [f"Y{k}", f"Yh{k}"] + ([f"Yc{k}"] if lstm else [])
        attrs = {"hidden_size": H}
        if cell == "gru":
            attrs["linear_before_reset"] = 1
        nodes.append(helper.make_node(ONNX_OPS[cell], ins, outs, name=f"{cell}{k}", **attrs))
        layer_in = "y" if k == L - 1 else f"y{k}"
        nodes.append(helper.make_node("Squeeze", [f"Y{k}", "axis1"], [layer_in]))  # (T, 1, B, H) -> (T, B, H)
        hs.append(f"Yh{k}")
        cs.append(f"Yc{k}")
    for name, parts in (("h_n", hs),) + ((("c_n", cs),) if lstm else ()):
        nodes.append(helper.make_node("Concat", parts, [name], axis=0) if L > 1 else
                     helper.make_node("Identity", parts, [name]))
    graph = helper.make_graph(nodes, f"rnncore_peer_{cell}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="rnncore-compare")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def peer_feeds(w):
    """The state inputs of the per-step graph, (names, zero arrays): h0 (and c0 for an LSTM), (1, B, H)."""
    import numpy as np

    names = ("h0", "c0") if w["cell"] == "lstm" else ("h0",)
    zeros = tuple(np.zeros((1, w["B"], w["H"]), np.float32) for _ in names)
    return names, zeros


def build_peer_ort(w, threads):
    import onnxruntime as ort

    params, x = peer_data(w)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_model(w, params), opts, providers=["CPUExecutionProvider"])
    if not w["calls"]:
        return lambda: tuple(sess.run(None, {"x": x}))
    names, zeros = peer_feeds(w)

    def steps():  # the state fed back through the session, call after call
        state = zeros
        for t in range(w["calls"]):
            out = sess.run(None, {"x": x[t:t + 1], **dict(zip(names, state))})
            state = out[1:]
        return tuple(out)

    return steps


def openvino_config(threads, precision="fp32"):
    """Precision pinned (f32, or bf16 for the bf16 table): on CPUs with AVX-512 BF16 or AMX, OpenVINO's
    default INFERENCE_PRECISION_HINT is bf16 (peer_note reports this host's default)."""
    return {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}


def build_peer_openvino(w, threads):
    import tempfile

    import openvino as ov

    params, x = peer_data(w)
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        with open(path, "wb") as f:
            f.write(onnx_model(w, params))
        compiled = core.compile_model(core.read_model(path), "CPU", openvino_config(threads, w.get("precision")))
    got = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    want = ("bf16", "bfloat16") if w.get("precision") == "bf16" else ("f32", "float32")
    if not any(v in got for v in want):
        raise RuntimeError(f"OpenVINO compiled the model with inference precision {got}, not {want[0]}")
    req = compiled.create_infer_request()
    outs = compiled.outputs
    if not w["calls"]:
        def fwd():
            res = req.infer({"x": x}, share_inputs=True)
            return tuple(res[o] for o in outs)
        return fwd
    names, zeros = peer_feeds(w)

    def steps():  # the state fed back through the request, call after call
        state = zeros
        for t in range(w["calls"]):
            res = req.infer({"x": x[t:t + 1], **dict(zip(names, state))}, share_inputs=True)
            out = tuple(res[o] for o in outs)
            state = out[1:]
        return out

    return steps


def peer_note():
    """OpenVINO's default CPU inference precision on this host (the runs pin f32), or None."""
    try:
        import openvino as ov

        hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
        return f"OpenVINO's default CPU INFERENCE_PRECISION_HINT here: {getattr(hint, 'to_string', hint.__str__)()}"
    except Exception:
        return None


PEER_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni",
              "amx_tile", "amx_bf16", "amx_int8")


def host_description():
    """The CPU model, family/model numbers and the flags that decide which kernels the engines
    take (AVX-512 BF16/VNNI, AMX), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return machine_description()
    fields = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    have = [f for f in PEER_FLAGS if f in flags]
    amx = "" if any(f.startswith("amx") for f in have) else "; no AMX"
    return (f"{fields.get('model name', platform.machine())} (family {fields.get('cpu family', '?')} model "
            f"{fields.get('model', '?')}), {os.cpu_count()} CPUs; flags {' '.join(have)}{amx}")


def rnncore_isa(pythonpath):
    """The kernel path (rnncore._core.isa()) of the rnncore the rnncore worker imports."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    r = subprocess.run([sys.executable, "-c", "from rnncore import _core; print(_core.isa())"], env=env,
                       capture_output=True, text=True)
    return r.stdout.strip() or "?"


def load_average():
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "?"


def peer_versions(engines):
    import importlib.metadata as md

    dist = {"torch": "torch", "torch-bf16": "torch", "ort": "onnxruntime", "openvino": "openvino", "numpy": "numpy"}
    labels = {"torch-bf16": PEER_LABELS["torch"]}
    out = []
    for e in engines:
        try:
            version = f"{labels.get(e, PEER_LABELS[e])} {md.version(dist[e])}"
        except md.PackageNotFoundError:
            continue
        if version not in out:
            out.append(version)
    return out


def available_engines(requested, find_spec=None):
    """(engines that can run, messages for those that cannot): an engine whose modules are not
    installed is skipped with a message naming the module, never an import error mid-run."""
    import importlib.util

    find_spec = find_spec or importlib.util.find_spec
    ok, skipped = [], []
    for e in requested:
        missing = [m for m in PEER_MODULES[e] if find_spec(m) is None]
        if missing:
            skipped.append(f"skipping {e} ({PEER_LABELS[e]}): module {', '.join(missing)} is not installed "
                           f"(pip install {' '.join(missing)})")
        else:
            ok.append(e)
    return ok, skipped


def peer_error(ref, got):
    """max |got - ref| / max(1, max |ref|) over every output array, or inf when the shapes differ."""
    import numpy as np

    if len(ref) != len(got):
        return float("inf")
    err = 0.0
    for r, g in zip(ref, got):
        r, g = np.asarray(r, np.float64), np.asarray(g, np.float64)
        if r.shape != g.shape or not np.all(np.isfinite(g)):
            return float("inf")
        err = max(err, float(np.max(np.abs(g - r))) / max(1.0, float(np.max(np.abs(r)))) if r.size else err)
    return err


def engine_supports(engine, w):
    if w["kind"] == "gemm":
        if w.get("precision") == "bf16":
            return engine in ("rnncore", "base", "torch", "torch-bf16")
        return engine in ("rnncore", "base", "numpy")
    return engine != "numpy"


def peer_label(engine, precision):
    return (BF16_LABELS.get(engine) if precision == "bf16" else None) or PEER_LABELS[engine]


def check_peer_engines(engines, precision):
    """(engines that run this table, messages for those left out): ONNX Runtime's CPU provider has no
    bf16 recurrent kernel; torch-bf16 is a bf16 engine only."""
    ok, msgs = [], []
    for e in engines:
        if e not in PRECISION_ENGINES[precision]:
            why = ("ONNX Runtime's CPU provider has no bfloat16 LSTM/GRU/RNN kernel" if e == "ort" else
                   f"it runs the bf16 table only (--precision bf16)")
            msgs.append(f"skipping {e} ({PEER_LABELS[e]}) at --precision {precision}: {why}")
        else:
            ok.append(e)
    return ok, msgs


def fmt_ms(ms):
    return f"{ms:.4f}" if ms < 1 else f"{ms:.2f}"


def ap_default_only():
    return ["gemm", "lstm", "gru", "rnn_tanh", "varlen", "gen", "lmtrain"]


def run_peers(args):
    """The peer table: returns its rows; raises SystemExit(1) after the table if any engine's
    output disagreed with rnncore's (the rows are not recorded then)."""
    import tempfile

    import numpy as np

    args.load_start = load_average()
    args.isa = rnncore_isa(ROOT if built_in_place(ROOT) else None)
    print(f"host: {host_description()}; rnncore's kernels: {args.isa}; load average (1, 5, 15 min) "
          f"{args.load_start}")
    bf16 = args.precision == "bf16"
    engines, left_out = check_peer_engines(args.engines, args.precision)
    peers, skipped = available_engines(engines)
    for msg in left_out + skipped:
        print(msg)
    if bf16:
        print("bf16 table: every engine's output (rnncore's bf16 too) is checked against rnncore's float32")
    tolerance = BF16_TOLERANCE if bf16 else PEER_TOLERANCE
    ignored = [g for g in args.only if g in ("varlen", "gen", "lmtrain", "lstmp")]
    if ignored and args.only != ap_default_only():
        print(f"--peers: no peer rows for {' '.join(ignored)} (training and sampling are not in the peer table)")
    work = peer_workloads(args)
    if any(w["kind"] == "gemm" for w in work) and not bf16:
        peers = peers + ["numpy"]
    workers = {"rnncore": Worker("rnncore", pythonpath=ROOT if built_in_place(ROOT) else None)}
    if args.baseline:
        workers["base"] = Worker("rnncore", pythonpath=os.path.abspath(args.baseline))
    for e in peers:
        if e != "numpy":
            workers[e] = Worker(e)
    cols = [e for e in peers]
    header = (f"{'workload':<40} {'thr':>3} {'rnncore ms':>10}" + (f" {'base/this':>9}" if args.baseline else "")
              + "".join(f" {e:>10}" for e in cols) + f" {'fastest peer':>12} {'vs fastest':>10} {'max err':>8}"
              + (f" {'rnncore err':>11}" if bf16 else ""))
    ref_name = "rnncore float32" if bf16 else "rnncore"
    print("engine columns: that engine's time / rnncore's (> 1: rnncore is faster); vs fastest: the fastest "
          f"peer's time / rnncore's; max err: the peers' largest max|engine - {ref_name}| / max(1, max|{ref_name}|) "
          f"of the row (must be <= {tolerance:g})" + ("; rnncore err: rnncore bf16's own" if bf16 else ""))
    print(header)
    print("-" * len(header))
    rows, failures = [], []
    tmp = tempfile.mkdtemp(prefix="rnncore-peers-")
    try:
        for threads in args.threads:
            if "numpy" in peers:
                if "numpy" in workers:
                    workers.pop("numpy").close()
                workers["numpy"] = Worker("numpy", threads)
            for w in work:
                names = [n for n in workers if engine_supports(n, w)]
                outputs, errors = {}, {}
                reference = None
                if bf16:  # rnncore's float32 output, before its bf16 run (which then stays built, warmed)
                    path = os.path.join(tmp, "reference.npz")
                    r = workers["rnncore"].run(dict(w, precision="fp32"), threads, 0, save=path)
                    if "error" in r:
                        raise RuntimeError(f"{w['name']}: rnncore float32: {r['error']}")
                    with np.load(path) as z:
                        reference = [z[f"arr_{i}"] for i in range(len(z.files))]
                for n in names:  # one untimed run each, saved for the check
                    wl = dict(w, perturb=args.perturb_amount) if n == args.perturb else w
                    path = os.path.join(tmp, f"{n}.npz")
                    r = workers[n].run(wl, threads, 0, save=path)
                    if "error" in r:
                        errors[n] = r["error"]
                        continue
                    with np.load(path) as z:
                        outputs[n] = [z[f"arr_{i}"] for i in range(len(z.files))]
                if "rnncore" not in outputs:
                    raise RuntimeError(f"{w['name']}: rnncore: {errors.get('rnncore')}")
                ref = reference if bf16 else outputs["rnncore"]
                err = {n: peer_error(ref, outputs[n]) for n in outputs if bf16 or n != "rnncore"}
                bad = sorted(n for n, e in err.items() if not e <= tolerance)
                for n in bad:
                    failures.append(f"{w['name']}, {threads} thread(s): {n}'s output differs from {ref_name}'s: "
                                    f"max error {err[n]:.3g} > {tolerance:g}")
                own_err = err.pop("rnncore", None)
                for n, e in errors.items():
                    failures.append(f"{w['name']}, {threads} thread(s): {n} failed: {e}")
                timed = [n for n in names if n in outputs]
                times = {n: [] for n in timed}
                for k in range(args.rounds):  # alternate, rotating who goes first
                    for n in timed[k % len(timed):] + timed[:k % len(timed)]:
                        time.sleep(args.settle)
                        wl = dict(w, perturb=args.perturb_amount) if n == args.perturb else w
                        r = workers[n].run(wl, threads, args.reps, warm=False)  # warmed by the checked run
                        times[n].append(r.get("seconds", float("nan")))
                per = max(1, w.get("calls") or 1)
                ms = {n: 1e3 * statistics.median(t) / per for n, t in times.items()}
                ratio = {n: ms[n] / ms["rnncore"] for n in ms}
                peer_ms = {n: ms[n] for n in ms if n in peers}
                fastest = min(peer_ms, key=peer_ms.get) if peer_ms else None
                row = {"workload": w["name"], "threads": threads, "ms": ms, "ratio": ratio, "errors": err,
                       "fastest": fastest, "vs_fastest": ratio[fastest] if fastest else None,
                       "max_err": max(err.values()) if err else None, "rnncore_err": own_err,
                       "failed": bad + sorted(errors)}
                rows.append(row)
                cells = "".join(f" {ratio[e]:>10.2f}" if e in ratio else f" {('FAIL' if e in errors else '-'):>10}"
                                for e in cols)
                print(f"{w['name']:<40} {threads:>3} {fmt_ms(ms['rnncore']):>10}"
                      + (f" {ratio['base']:>8.2f}x" if args.baseline else "") + cells
                      + (f" {fastest:>12} {ratio[fastest]:>9.2f}x" if fastest else f" {'-':>12} {'-':>10}")
                      + (f" {row['max_err']:>8.1e}" if err else f" {'-':>8}")
                      + (f" {own_err:>11.1e}" if own_err is not None else "")
                      + ("  MISMATCH: " + ", ".join(row["failed"]) if row["failed"] else ""), flush=True)
    finally:
        for wk in workers.values():
            wk.close()
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
        os.rmdir(tmp)
    args.load_end = load_average()
    print(f"load average at the end: {args.load_end}")
    note = peer_note() if "openvino" in peers else None
    if note:
        print(f"\n{note}; these runs set it to {'bf16' if bf16 else 'f32'}")
    if failures:
        print("\nFAILED: the outputs of these engines do not match rnncore's, so their times mean nothing:",
              file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        raise SystemExit(1)
    return rows, peers, note


def record_peers(rows, peers, note, args):
    path = os.path.join(HERE, "RESULTS.md")
    cmd = "python bench/compare.py " + " ".join(sys.argv[1:])
    bf16 = args.precision == "bf16"
    check = (f"checked against rnncore's float32 output (max error <= {BF16_TOLERANCE:g}; rnncore err: rnncore "
             "bf16's own)" if bf16 else f"checked against rnncore's (max error <= {PEER_TOLERANCE:g})")
    lines = [f"\n### {datetime.date.today().isoformat()} — peers{' (bf16)' if bf16 else ''}: `{cmd}`\n",
             f"Machine: {host_description()}. Load average (1, 5, 15 min) at the start "
             f"{args.load_start}, at the end {args.load_end} (2 cores shared with other jobs). rnncore's kernels: "
             f"{args.isa}.\n",
             "Versions: " + ", ".join(peer_versions(peers))
             + (f". {note}; these runs set {'bf16' if bf16 else 'f32'}." if note else "") + "\n",
             "Each engine column: that engine's time / rnncore's (rnncore = 1.00; > 1: rnncore is faster), its "
             f"median ms in brackets; per-step rows are per call. Every engine's output was {check}.\n",
             "| workload | threads | rnncore ms | " + " | ".join(peer_label(e, args.precision) for e in peers)
             + " | fastest peer | vs fastest | max err |" + (" rnncore err |" if bf16 else ""),
             "|---|---:|---:|" + "---:|" * len(peers) + "---|---:|---:|" + ("---:|" if bf16 else "")]
    for r in rows:
        cells = " | ".join(f"{r['ratio'][e]:.2f} ({fmt_ms(r['ms'][e])})" if e in r["ratio"] else "" for e in peers)
        lines.append(f"| {r['workload']} | {r['threads']} | {fmt_ms(r['ms']['rnncore'])} | {cells} | "
                     + (f"{peer_label(r['fastest'], args.precision)} | {r['vs_fastest']:.2f}x" if r["fastest"]
                        else " | ")
                     + (f" | {r['max_err']:.1e} |" if r["max_err"] is not None else " | |")
                     + ((f" {r['rnncore_err']:.1e} |" if r["rnncore_err"] is not None else " |") if bf16 else ""))
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"recorded in {path}")


def as_numpy(outputs):
    """An engine's outputs as numpy arrays; torch tensors (bf16 ones too) as float32."""
    import numpy as np

    return [a.float().numpy() if hasattr(a, "detach") else np.asarray(a) for a in outputs]


def time_it(fn, reps, min_seconds=0.3, warm=True):
    if warm:
        fn()  # warm up: allocations, packing, thread pools (--peers: its untimed checked run did)
    times = []
    start = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - start < min_seconds and len(times) < 50 * reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def serve(engine):
    builders = {"rnncore": build_rnncore, "torch": build_torch, "numpy": build_numpy, "ort": build_peer_ort,
                "openvino": build_peer_openvino,
                "torch-bf16": lambda w, threads: build_peer_torch(w, threads, cast=True)}
    cache = {}
    for line in sys.stdin:
        req = json.loads(line)
        key = (json.dumps(req["workload"], sort_keys=True), req["threads"])
        try:
            if key not in cache:
                cache.clear()
                cache[key] = builders[engine](req["workload"], req["threads"])
            if req.get("save"):  # one untimed run, its outputs saved for the peers' correctness check
                import numpy as np

                out = cache[key]()
                np.savez(req["save"], *as_numpy(out if isinstance(out, tuple) else (out,)))
                reply = {"saved": req["save"]}
            else:
                reply = {"seconds": time_it(cache[key], req["reps"], warm=req.get("warm", True))}
        except Exception as exc:  # report, keep serving
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


ROOT = os.path.dirname(HERE)


def built_in_place(root):
    rn = os.path.join(root, "rnncore")
    return os.path.isdir(rn) and any(f.startswith("_core") and f.endswith((".so", ".pyd")) for f in os.listdir(rn))


class Worker:
    def __init__(self, engine, threads=None, pythonpath=None):
        env = dict(os.environ)
        if pythonpath:  # rnncore from this checkout (built in place) instead of the installed one
            env["PYTHONPATH"] = os.pathsep.join([pythonpath] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        if engine == "numpy":  # time numpy's own sgemm kernel, not the conservative fallback
            env.pop("OPENBLAS_CORETYPE", None)
            env.pop("OPENBLAS_L2_SIZE", None)
            env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", engine], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, workload, threads, reps, save=None, warm=True):
        req = {"workload": workload, "threads": threads, "reps": reps}
        if save:
            req["save"] = save
        if not warm:
            req["warm"] = False
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("benchmark worker died")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def torch_available():
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None
    except Exception:
        return False


def machine_description():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        for line in info.splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        flags = [f for f in ("avx512f", "avx2", "fma") if f" {f}" in info]
        model += f" ({', '.join(flags)})"
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def main():
    ap = argparse.ArgumentParser(description="rnncore vs PyTorch, side by side in one run.")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--only", nargs="+", default=ap_default_only(),
                    help="workload groups: gemm lstm gru rnn_tanh lstmp varlen gen lmtrain (lstmp: the LSTM with "
                         "projections, proj_size = H/4, on --shapes; not in the default set)")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--modes", nargs="+", default=["fwd", "train"], choices=["fwd", "train"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3, help="alternations per workload (medians are taken)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per round")
    ap.add_argument("--settle", type=float, default=0.2,
                    help="seconds to pause before each timing, so the worker that ran last has its idle threads "
                         "stop spinning (OpenBLAS's spin for about 0.1 s) instead of sharing the cores")
    ap.add_argument("--quick", action="store_true", help="a few small workloads, one round (smoke test)")
    ap.add_argument("--record", action="store_true", help="append the table to bench/RESULTS.md")
    ap.add_argument("--baseline", metavar="DIR",
                    help="another rnncore checkout, built in place (setup.py build_ext --inplace), timed in the same "
                         "run, alternating with this one: adds the columns 'base ms' and 'base/this'")
    ap.add_argument("--peers", action="store_true",
                    help="the inference runtimes as peers: forward only, shapes --shapes plus the streaming model "
                         "(50, 1, 64, 64) and a per-step workload (T=1, B=1, H=256, state carried, 1,000 calls), "
                         "every engine's output checked against rnncore's (exit 1 on a mismatch); with --quick only "
                         "the streaming and a 100-call per-step row")
    ap.add_argument("--engines", nargs="+", choices=list(PEER_ENGINES), default=None,
                    help="the peers to run (implies --peers; default: " + " ".join(PRECISION_ENGINES["fp32"])
                         + ", or with --precision bf16 " + " ".join(PRECISION_ENGINES["bf16"])
                         + "; ort = ONNX Runtime, torch-bf16 = PyTorch after .to(torch.bfloat16)); one not "
                           "installed is skipped with a message")
    ap.add_argument("--precision", choices=list(PRECISION_ENGINES) + ["int8"], default="fp32",
                    help="--peers: bf16 runs rnncore's bfloat16 layers and GEMM against PyTorch autocast, "
                         "PyTorch .to(bfloat16) and OpenVINO bf16, checked against rnncore's float32 output; int8 "
                         "runs bench/quant_generate.py (rnncore's int8 runs whole language models: the 2x512 "
                         "char-LSTM against ONNX Runtime's and PyTorch's quantize_dynamic int8)")
    ap.add_argument("--perturb", choices=list(PEER_ENGINES), help=argparse.SUPPRESS)  # tests: the check must fail
    ap.add_argument("--perturb-amount", type=float, default=1e-3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.quick:
        args.rounds, args.reps, args.settle = 1, 2, 0.0
    if args.precision != "fp32" and not (args.peers or args.engines):
        ap.error("--precision: the reduced-precision table is a --peers table (add --peers)")
    if args.precision == "int8":  # the int8 peer table is a whole-model one: bench/quant_generate.py
        cmd = [sys.executable, os.path.join(HERE, "quant_generate.py"), "--threads", *map(str, args.threads),
               "--rounds", str(args.rounds)] + (["--tokens", "100", "--seq-len", "50"] if args.quick else [])
        print("int8: rnncore quantizes whole language models (rnncore.quantize), so the int8 peer table is "
              "bench/quant_generate.py's: " + " ".join(cmd[1:]), flush=True)
        raise SystemExit(subprocess.run(cmd).returncode)
    if args.peers or args.engines:
        args.engines = args.engines or list(PRECISION_ENGINES[args.precision])
        if args.baseline and not built_in_place(os.path.abspath(args.baseline)):
            ap.error(f"--baseline: {args.baseline} has no rnncore/_core built in place")
        rows, peers, note = run_peers(args)
        if args.record:
            record_peers(rows, peers, note, args)
        return

    have_torch = torch_available()
    workers = {"rnncore": Worker("rnncore", pythonpath=ROOT if built_in_place(ROOT) else None)}
    if args.baseline:
        base = os.path.abspath(args.baseline)
        if not built_in_place(base):
            ap.error(f"--baseline: {base} has no rnncore/_core built in place (run setup.py build_ext --inplace there)")
        workers["base"] = Worker("rnncore", pythonpath=base)
    if have_torch:
        workers["torch"] = Worker("torch")
    rows = []
    header = (f"{'workload':<34} {'thr':>3} {'rnncore ms':>11} {'ref ms':>9} {'ref':>6} {'speedup':>8} "
              f"{'GFLOP/s':>8} {'% sgemm':>8} {'tokens/s':>9}" + (f" {'base ms':>9} {'base/this':>9}" if args.baseline else ""))
    print(header)
    print("-" * len(header))
    try:
        for threads in args.threads:
            if "numpy" in workers:
                workers.pop("numpy").close()
            workers["numpy"] = Worker("numpy", threads)  # numpy's BLAS threads are fixed at start
            sgemm = {"kind": "sgemm", "name": "numpy sgemm 2048^3"}
            peak = []
            for w in workloads(args):
                ref_engine = "numpy" if w["kind"] == "gemm" else ("torch" if have_torch else None)
                ours, theirs, based = [], [], []
                for _ in range(args.rounds):
                    time.sleep(args.settle)
                    r = workers["rnncore"].run(w, threads, args.reps)
                    if "error" in r:
                        raise RuntimeError(f"{w['name']}: rnncore: {r['error']}")
                    ours.append(r["seconds"])
                    if "base" in workers:
                        time.sleep(args.settle)
                        based.append(workers["base"].run(w, threads, args.reps).get("seconds", float("nan")))
                    if ref_engine:
                        time.sleep(args.settle)
                        r = workers[ref_engine].run(w, threads, args.reps)
                        theirs.append(r.get("seconds", float("nan")))
                    time.sleep(args.settle)
                    peak.append(workers["numpy"].run(sgemm, threads, 2).get("seconds", float("nan")))
                t_ours = statistics.median(ours)
                t_ref = statistics.median(theirs) if theirs else float("nan")
                gflops = w["flops"] / t_ours / 1e9
                sgemm_gflops = 2.0 * 2048 ** 3 / statistics.median(peak) / 1e9
                row = {"workload": w["name"], "threads": threads, "rnncore_ms": 1e3 * t_ours, "ref_ms": 1e3 * t_ref,
                       "ref": ref_engine or "-", "speedup": t_ref / t_ours, "gflops": gflops,
                       "pct_sgemm": 100.0 * gflops / sgemm_gflops, "sgemm_gflops": sgemm_gflops,
                       "tokens_per_s": w["tokens"] / t_ours if "tokens" in w else None,
                       "base_ms": 1e3 * statistics.median(based) if based else None}
                rows.append(row)
                tps = f"{row['tokens_per_s']:>9,.0f}" if row["tokens_per_s"] else f"{'':>9}"
                print(f"{row['workload']:<34} {threads:>3} {row['rnncore_ms']:>11.2f} {row['ref_ms']:>9.2f} "
                      f"{row['ref']:>6} {row['speedup']:>7.2f}x {gflops:>8.1f} {row['pct_sgemm']:>7.0f}% {tps}"
                      + (f" {row['base_ms']:>9.2f} {row['base_ms'] / row['rnncore_ms']:>8.2f}x" if based else ""),
                      flush=True)
    finally:
        for wk in workers.values():
            wk.close()
    if rows and args.baseline:
        ratios = [r["base_ms"] / r["rnncore_ms"] for r in rows]
        print(f"\nbaseline {args.baseline} / this build: median {statistics.median(ratios):.3f}x over {len(rows)} "
              f"workloads (min {min(ratios):.3f}x, max {max(ratios):.3f}x; > 1 means this build is faster)")
    if rows:
        print(f"\nnumpy sgemm 2048^3 in this run: " + ", ".join(
            f"{t} thread(s) {statistics.median(r['sgemm_gflops'] for r in rows if r['threads'] == t):.0f} GFLOP/s"
            for t in args.threads))
    if args.record:
        record(rows, args)


def record(rows, args):
    path = os.path.join(HERE, "RESULTS.md")
    cmd = "python bench/compare.py " + " ".join(sys.argv[1:])
    lines = [f"\n### {datetime.date.today().isoformat()} — `{cmd}`\n", f"Machine: {machine_description()}\n",
             "| workload | threads | rnncore ms | ref ms | ref | speedup | GFLOP/s | % sgemm | tokens/s |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        tps = f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else ""
        lines.append(f"| {r['workload']} | {r['threads']} | {r['rnncore_ms']:.2f} | {r['ref_ms']:.2f} | {r['ref']} | "
                     f"{r['speedup']:.2f}x | {r['gflops']:.1f} | {r['pct_sgemm']:.0f}% | {tps} |")
    for t in sorted({r["threads"] for r in rows}):
        sg = statistics.median(r["sgemm_gflops"] for r in rows if r["threads"] == t)
        lines.append(f"\nnumpy sgemm 2048^3, {t} thread(s), same run: {sg:.0f} GFLOP/s")
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"recorded in {path}")


if __name__ == "__main__":
    main()
