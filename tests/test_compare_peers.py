"""bench/compare.py's peers (--peers): PyTorch, ONNX Runtime and OpenVINO run the same weights
as rnncore on tiny shapes and agree with it; the correctness check fails on perturbed weights
and on a wrong gate order; a missing runtime is skipped with a message; the command exits 1
when an engine disagrees. No timing is asserted."""
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import compare  # noqa: E402

BUILDERS = {"torch": compare.build_peer_torch, "ort": compare.build_peer_ort,
            "openvino": compare.build_peer_openvino}
MODULES = {"torch": "torch", "ort": "onnxruntime", "openvino": "openvino"}


def need(engine):
    pytest.importorskip(MODULES[engine])
    if engine != "torch":
        pytest.importorskip("onnx")


def tiny(cell, layers=1, calls=0, T=5, B=2, I=3, H=4, **extra):
    return dict({"kind": "peer", "cell": cell, "T": T, "B": B, "I": I, "H": H, "layers": layers, "calls": calls},
                **extra)


def run(engine, w, threads=1):
    return (compare.build_peer_rnncore if engine == "rnncore" else BUILDERS[engine])(w, threads)()


@pytest.mark.parametrize("engine", list(BUILDERS))
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("layers,calls", [(1, 0), (2, 0), (1, 7)])
def test_engine_matches_rnncore(engine, cell, layers, calls):
    need(engine)
    w = tiny(cell, layers, calls)
    ref, got = run("rnncore", w), run(engine, w)
    # y (T, B, H) (the last call's (1, B, H) per step), h_n (L, B, H), c_n for an LSTM
    T = 1 if calls else w["T"]
    assert [a.shape for a in ref] == [(T, 2, 4)] + [(layers, 2, 4)] * (2 if cell == "lstm" else 1)
    err = compare.peer_error(ref, got)
    assert err <= compare.PEER_TOLERANCE, (engine, err)
    assert max(float(np.max(np.abs(a))) for a in ref) > 0.05  # not a vacuous all-zeros agreement


@pytest.mark.parametrize("engine", list(BUILDERS))
def test_two_threads_match(engine):
    need(engine)
    w = tiny("lstm", T=20, B=8, I=48, H=64)
    assert compare.peer_error(run("rnncore", w, 2), run(engine, w, 2)) <= compare.PEER_TOLERANCE


@pytest.mark.parametrize("engine", list(BUILDERS))
def test_step_workload_carries_the_state(engine):
    """T=1 calls feeding the state back end where one forward over the whole sequence does."""
    need(engine)
    steps, whole = run(engine, tiny("gru", calls=7)), run("rnncore", tiny("gru", T=7))
    # peer_data draws x (calls, B, I) exactly as it draws x (T, B, I): the same sequence
    assert compare.peer_error([whole[0][-1:], whole[1]], steps) <= compare.PEER_TOLERANCE


@pytest.mark.parametrize("engine", list(BUILDERS))
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_perturbed_weights_are_caught(engine, cell):
    need(engine)
    w = tiny(cell, T=20)
    ref = run("rnncore", w)
    assert compare.peer_error(ref, run(engine, w)) <= compare.PEER_TOLERANCE
    err = compare.peer_error(ref, run(engine, dict(w, perturb=1e-3)))
    assert err > compare.PEER_TOLERANCE, err


@pytest.mark.parametrize("engine", ["ort", "openvino"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_onnx_gate_order_is_needed(engine, cell, monkeypatch):
    """Without the reorder to ONNX's gate order (LSTM i,o,f,c; GRU z,r,h) the check fails."""
    need(engine)
    w = tiny(cell, T=8)
    ref = run("rnncore", w)
    monkeypatch.setitem(compare.ONNX_GATE_ORDER, cell, tuple(range(compare.GATES[cell])))
    assert compare.peer_error(ref, run(engine, w)) > compare.PEER_TOLERANCE


def test_peer_error():
    a = [np.array([[0.5, -0.25]], np.float32)]
    assert compare.peer_error(a, [a[0].copy()]) == 0.0
    assert compare.peer_error(a, [a[0] + np.float32(1e-3)]) == pytest.approx(1e-3, rel=1e-3)
    assert compare.peer_error(a, [a[0][:, :1]]) == float("inf")  # another shape
    assert compare.peer_error(a, [np.array([[np.nan, 0]], np.float32)]) == float("inf")
    assert compare.peer_error(a, a + a) == float("inf")  # another number of outputs
    big = [np.array([100.0, 0.0])]
    assert compare.peer_error(big, [np.array([100.01, 0.0])]) == pytest.approx(1e-4)  # relative to max |ref|


def test_openvino_precision_is_pinned(monkeypatch):
    """The builder refuses a model OpenVINO compiled in another precision than f32 (on hosts whose
    default is bf16, dropping the hint compiles it in bf16)."""
    need("openvino")
    assert compare.openvino_config(2)["INFERENCE_PRECISION_HINT"] == "f32"
    note = compare.peer_note()
    if "bf16" not in note and "bfloat16" not in note:
        pytest.skip(f"this host's OpenVINO default is f32 ({note})")
    monkeypatch.setattr(compare, "openvino_config", lambda threads, precision="fp32": {"INFERENCE_NUM_THREADS": threads})
    with pytest.raises(RuntimeError, match="precision"):
        compare.build_peer_openvino(tiny("lstm"), 1)


def test_missing_engines_are_skipped_with_a_message():
    def find_spec(name):
        return None if name == "onnxruntime" else object()

    ok, skipped = compare.available_engines(["torch", "ort", "openvino"], find_spec=find_spec)
    assert ok == ["torch", "openvino"]
    assert skipped == ["skipping ort (ONNX Runtime): module onnxruntime is not installed (pip install onnxruntime)"]


def test_peer_workloads():
    class Args:
        only, shapes, quick, precision = ["gemm", "lstm", "gru"], ["a", "c"], False, "fp32"

    names = [w["name"] for w in compare.peer_workloads(Args)]
    assert names == ["gemm 6400x512x2048", "lstm a fwd (100,64,512,512)", "lstm c fwd (100,1,256,256)",
                     "lstm stream (50,1,64,64)", "lstm step (1,1,256,256) x1000, per call",
                     "gru a fwd (100,64,512,512)", "gru c fwd (100,1,256,256)", "gru stream (50,1,64,64)",
                     "gru step (1,1,256,256) x1000, per call"]
    Args.shapes = ["d"]
    assert compare.peer_workloads(Args)[1]["name"] == "lstm d fwd (50,32,128,1024) x2"
    assert all("precision" not in w for w in compare.peer_workloads(Args))


def test_bf16_peer_workloads():
    """--precision bf16: two GEMM rows, every row tagged bf16 (the per-step row runs rnncore's bf16 stream)."""
    class Args:
        only, shapes, quick, precision = ["gemm", "lstm"], ["b"], False, "bf16"

    work = compare.peer_workloads(Args)
    assert [w["name"] for w in work] == ["gemm 6400x512x2048", "gemm 2048^3", "lstm b fwd (100,16,256,256)",
                                         "lstm stream (50,1,64,64)", "lstm step (1,1,256,256) x1000, per call"]
    assert all(w["precision"] == "bf16" for w in work)


def test_bf16_engine_sets():
    ok, msgs = compare.check_peer_engines(["torch", "ort", "openvino", "torch-bf16"], "bf16")
    assert ok == ["torch", "openvino", "torch-bf16"]
    assert msgs == ["skipping ort (ONNX Runtime) at --precision bf16: ONNX Runtime's CPU provider has no "
                    "bfloat16 LSTM/GRU/RNN kernel"]
    ok, msgs = compare.check_peer_engines(["torch", "torch-bf16"], "fp32")
    assert ok == ["torch"] and "bf16 table only" in msgs[0]
    assert compare.openvino_config(1, "bf16")["INFERENCE_PRECISION_HINT"] == "bf16"
    assert compare.peer_label("torch", "bf16") == "PyTorch autocast bf16"
    assert compare.peer_label("torch", "fp32") == "PyTorch"


BF16_BUILDERS = {"rnncore": compare.build_peer_rnncore, "torch": compare.build_peer_torch,
                 "torch-bf16": lambda w, threads: compare.build_peer_torch(w, threads, cast=True),
                 "openvino": compare.build_peer_openvino}


@pytest.mark.parametrize("engine", list(BF16_BUILDERS))
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("calls", [0, 9])
def test_bf16_engine_is_bf16_and_close_to_float32(engine, cell, calls):
    """Each bf16 engine is within BF16_TOLERANCE of rnncore's float32 output, and further from it than
    float32 rounding: it really ran in bf16."""
    if engine != "rnncore":
        need("openvino" if engine == "openvino" else "torch")
    w = tiny(cell, layers=1 if calls else 2, calls=calls, T=20, B=3, I=24, H=32, precision="bf16")
    ref = run("rnncore", dict(w, precision="fp32"))
    try:
        got = compare.as_numpy(BF16_BUILDERS[engine](w, 1)())
    except RuntimeError as exc:  # OpenVINO on a host whose CPU plugin has no bf16 compiles in f32
        if engine == "openvino" and "precision" in str(exc):
            pytest.skip(str(exc))
        raise
    err = compare.peer_error(ref, got)
    assert compare.PEER_TOLERANCE < err <= compare.BF16_TOLERANCE, (engine, err)


@pytest.mark.parametrize("engine", ["torch", "torch-bf16"])
def test_bf16_gemm_rows_agree(engine):
    need("torch")
    w = {"kind": "gemm", "M": 37, "K": 70, "N": 45, "precision": "bf16"}
    ref = np.asarray(compare.build_rnncore(dict(w, precision="fp32"), 1)())
    ours = np.asarray(compare.build_rnncore(w, 1)())
    theirs = compare.as_numpy([BF16_BUILDERS[engine](w, 1)()])[0]
    assert compare.PEER_TOLERANCE < compare.peer_error([ref], [ours]) <= compare.BF16_TOLERANCE
    assert compare.peer_error([ref], [theirs]) <= compare.BF16_TOLERANCE


def compare_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, os.path.join(ROOT, "bench", "compare.py"), *args], env=env,
                          capture_output=True, text=True, timeout=600)


def installed_peers():
    ok, _ = compare.available_engines(list(compare.PRECISION_ENGINES["fp32"]))
    if not ok:
        pytest.skip("none of torch, onnxruntime, openvino is installed")
    return ok


def test_cli_peer_table():
    engines = installed_peers()
    r = compare_cli("--peers", "--quick", "--only", "gru", "--threads", "1", "--engines", *engines)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    header = next(line for line in lines if line.startswith("workload"))
    for col in ["rnncore ms"] + engines + ["fastest peer", "vs fastest", "max err"]:
        assert col in header, col
    rows = [line for line in lines if line.startswith("gru ")]
    assert [row.split("  ")[0] for row in rows] == ["gru stream (50,1,64,64)", "gru step (1,1,256,256) x100, per call"]
    for row in rows:
        assert "MISMATCH" not in row
        assert float(row.split()[-1]) <= compare.PEER_TOLERANCE  # max err, the last column


def test_cli_exits_1_when_an_engine_disagrees():
    engines = installed_peers()
    r = compare_cli("--peers", "--quick", "--only", "lstm", "--threads", "1", "--engines", engines[0],
                    "--perturb", engines[0])
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"MISMATCH: {engines[0]}" in r.stdout
    assert "FAILED" in r.stderr and f"{engines[0]}'s output differs from rnncore's" in r.stderr


def test_cli_bf16_peer_table():
    need("torch")
    r = compare_cli("--peers", "--quick", "--precision", "bf16", "--only", "lstm", "--threads", "1", "--engines",
                    "torch", "torch-bf16", "ort")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "skipping ort (ONNX Runtime) at --precision bf16" in r.stdout
    header = next(line for line in r.stdout.splitlines() if line.startswith("workload"))
    for col in ("torch", "torch-bf16", "max err", "rnncore err"):
        assert col in header, col
    rows = [line for line in r.stdout.splitlines() if line.startswith("lstm ")]
    assert [row.split("  ")[0] for row in rows] == ["lstm stream (50,1,64,64)", "lstm step (1,1,256,256) x100, per call"]
    for row in rows:
        own, peers = float(row.split()[-1]), float(row.split()[-2])
        assert compare.PEER_TOLERANCE < own <= compare.BF16_TOLERANCE and peers <= compare.BF16_TOLERANCE


def test_cli_precision_needs_peers():
    r = compare_cli("--precision", "bf16", "--quick")
    assert r.returncode == 2 and "--precision" in r.stderr


def test_cli_int8_runs_the_whole_model_table():
    """--precision int8 is bench/quant_generate.py's table (rnncore's int8 runs whole models)."""
    pytest.importorskip("onnxruntime")
    r = compare_cli("--peers", "--precision", "int8", "--quick", "--threads", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bench/quant_generate.py" in r.stdout and "rnncore-int8" in r.stdout
