"""The inputs that fail today, one narrow test each (known.py): xfail(strict=True) while known, so
that a fix turns its test into an XPASS, which fails the run until the key is deleted from
known.py. Then the regressions of failures already fixed, which must simply pass.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz.known import known, many_threads
from fuzz.specs import A, Call, Junk

small = settings(max_examples=6)

# hypothesis imports libcst to word a failure, which warns about mypy_extensions: noise here
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")


def _lm(V=5, H=4, cell="lstm"):
    return {"vocab_size": V, "embedding_dim": 3, "hidden_size": H, "cell": cell, "seed": 0}


def _decoder_ctor(V, cell="lstm", B=2, E=3, H=4):
    G = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}[cell]
    return {"cell": cell, "embedding": A("float32", (V, E)),
            "layers": [(A("float32", (G * H, E)), A("float32", (G * H, H)), None, None)],
            "w_out": A("float32", (V, H)), "b_out": None, "batch": B, "threads": 1}


# -- issue 11 -------------------------------------------------------------------------------------

@many_threads
@known("threads_huge")
@small
@given(n=st.sampled_from([100000, 40000, 2**31 - 1]), how=st.sampled_from(["set", "ctor", "env"]),
       work=st.sampled_from(["lstm", "linear", "layernorm"]))
def test_huge_thread_count_through_the_api(pool, n, how, work):
    """set_num_threads(100000) / threads=100000 / OMP_NUM_THREADS=100000, then work big enough for
    thousands of threads: must not take the process down."""
    pool.check(Call("fuzz.scenarios.with_threads", (n, how, work, True)))


@many_threads
@known("threads_huge")
@small
@given(n=st.sampled_from([100000, 40000, 2**31 - 1]), which=st.sampled_from(["recurrent", "gemm", "layernorm"]))
def test_huge_thread_count_in_core(pool, n, which):
    """_core kernels given threads=100000 and work enough for thousands of threads (a 1024^3 GEMM,
    the input projection of a wide layer, a 16384 x 1024 layer norm)."""
    if which == "recurrent":
        call = Call("rnncore._core.recurrent_forward",
                    ("lstm", A("float32", (8, 128, 512)), A("float32", (2048, 512)), A("float32", (2048, 512))),
                    {"out": A("float32", (8, 128, 512)), "threads": n}, public=False)
    elif which == "gemm":
        call = Call("rnncore._core.gemm", (A("float32", (1024, 1024)), A("float32", (1024, 1024)),
                                           A("float32", (1024, 1024))), {"threads": n}, public=False)
    else:
        call = Call("rnncore._core.layernorm_forward", (A("float32", (16384, 1024)),), {"threads": n}, public=False)
    pool.check(call)


@known("threads_2_31")
@small
@given(n=st.sampled_from([2**31, 2**32, 2**63, 10**30]), how=st.sampled_from(["set", "ctor", "env"]),
       work=st.sampled_from(["lstm", "linear", "embedding", "loss", "optim", "generate"]))
def test_thread_count_past_int32(pool, n, how, work):
    """A thread count >= 2**31 must be refused (or clamped) with a clear message, not a pybind11 dump."""
    pool.check(Call("fuzz.scenarios.with_threads", (n, how, work, False)))


@known("lmdecoder_v0")
@small
@given(cell=st.sampled_from(["lstm", "gru", "rnn_tanh"]), batch=st.integers(1, 3),
       op=st.sampled_from([("sample", 3), ("beam_search", 3), ("step_logits",), ("sample", 1, 0.0)]))
def test_decoder_with_an_empty_vocabulary(pool, cell, batch, op):
    """_core.LMDecoder with V = 0 (embedding and w_out with no rows): refuse it, or decode nothing."""
    pool.check(Call("fuzz.scenarios.core_decoder", (_decoder_ctor(0, cell, batch), [op]), public=False))


@known("deep_header")
@small
@given(depth=st.sampled_from([100000, 20000]), kind=st.sampled_from(["LSTM", "Linear"]))
def test_deeply_nested_checkpoint_header(pool, depth, kind):
    """A checkpoint whose header nests `depth` arrays: CheckpointError, not RecursionError."""
    ctor = {"input_size": 2, "hidden_size": 3} if kind == "LSTM" else {"in_features": 2, "out_features": 3}
    pool.check(Call("fuzz.scenarios.save_load", (kind, ctor), {"mutate": ("nest", depth), "into_model": False}))


# -- found by this harness (not in issue 11) ------------------------------------------------------

@known("decoder_pybind")
@small
@given(op=st.sampled_from([("seed", -1), ("sample", "x"), ("step_logits", 1), ("sample", 2**63), ("seed", 2**64),
                           ("beam_search", -1.5), ("prime", [[1, 2]])]))
def test_decoder_methods_name_their_bad_arguments(pool, op):
    """sampling.Decoder's methods: a bad argument gives a TypeError/ValueError naming it, not a dump."""
    pool.check(Call("fuzz.scenarios.decoder", (_lm(), 1, [op])))


@known("int64_args")
@small
@given(case=st.sampled_from([
    ("generate", {"prime": [1, 2], "max_new_tokens": 3, "top_k": 2**63}),
    ("generate", {"prime": [1, 2], "max_new_tokens": 2**63}),
    ("beam_search", {"prime": [1, 2], "beam_width": 2**63, "max_len": 3}),
    ("loss_function", None),
    ("optimizer_load_state", None),
]))
def test_integers_past_int64_are_refused(pool, case):
    """Integers outside int64 must be refused by the Python checks (ValueError/OverflowError naming them)."""
    name, kwargs = case
    if name == "loss_function":
        pool.check(Call("fuzz.scenarios.loss_function", (A("float32", (3, 4)), A("int64", (3,), fill="range", hi=4)),
                        {"kwargs": {"ignore_index": 2**63}}))
    elif name == "optimizer_load_state":
        state = {"state": {0: {"step": 2**63, "exp_avg": A("float32", (3,)), "exp_avg_sq": A("float32", (3,))}},
                 "param_groups": [{"lr": 1e-3, "params": [0]}]}
        pool.check(Call("fuzz.scenarios.optimizer_load_state", ("Adam", {"lr": 1e-3}, [A("float32", (3,))], state)))
    else:
        pool.check(Call("fuzz.scenarios." + name, (_lm(),), kwargs))


@known("optim_state_scalar")
@small
@given(case=st.sampled_from([("Adam", {}, ["exp_avg", "exp_avg_sq"]), ("SGD", {"momentum": 0.9}, ["momentum_buffer"]),
                             ("RMSprop", {}, ["square_avg"]), ("Adagrad", {}, ["sum"])]))
def test_optimizer_state_holding_a_number(pool, case):
    """load_state_dict with a number where a state array belongs: refused at load, not AttributeError at step()."""
    name, ctor, names = case
    state = {"state": {0: dict({k: 0.0 for k in names}, step=1)}, "param_groups": [dict(ctor, lr=0.1, params=[0])]}
    pool.check(Call("fuzz.scenarios.optimizer_load_state", (name, dict(ctor, lr=0.1), [A("float32", (3,))], state)))


@known("num_layers_huge")
@small
@given(cls=st.sampled_from(["LSTM", "GRU", "RNN"]), n=st.sampled_from([2**31, 2**40]))
def test_huge_layer_count_is_refused_up_front(pool, cls, n):
    """nn.LSTM(4, 4, num_layers=2**31): a quick ValueError/MemoryError, not minutes of allocation."""
    pool.check(Call("rnncore.nn." + cls, (4, 4), {"num_layers": n}), timeout=3)


@known("core_token_list")
@small
@given(method=st.sampled_from(["sample", "beam_search"]), bad=st.sampled_from([2**63, "a", 1.5, None]))
def test_decoder_stop_tokens_of_the_wrong_type(pool, method, bad):
    """_core.LMDecoder.sample/beam_search(stop_tokens=[bad]): TypeError/ValueError, not a RuntimeError."""
    pool.check(Call("fuzz.scenarios.core_decoder", (_decoder_ctor(5), [(method, 2) + ((1.0, 0, 1.0, 1.0, [bad]) if
                                                                                      method == "sample" else
                                                                                      (0.0, 1, [bad]))]),
                    public=False))


@known("save_array_dtype")
@small
@given(dtype=st.sampled_from(["object", "complex128", "<U1"]))
def test_saving_extra_arrays_of_an_unstorable_dtype(pool, dtype):
    """rnncore.save(..., arrays={'state': a}) with a dtype safetensors cannot store: TypeError naming it."""
    pool.check(Call("fuzz.scenarios.save_load", ("Linear", {"in_features": 2, "out_features": 3}),
                    {"arrays": {"state": A(dtype, (2,))}, "into_model": False}))


@known("decoder_batch_overflow")
@small
@given(case=st.sampled_from(["core", "decoder", "beam_search"]), batch=st.sampled_from([2**63 - 1, 3 * 2**61]))
def test_decoder_batch_near_int64_max(pool, case, batch):
    """A decoder batch whose workspace sizes overflow: ValueError/MemoryError, not a segfault."""
    lm = {"vocab_size": 5, "embedding_dim": 1, "hidden_size": 9, "cell": "rnn", "seed": 0}
    if case == "core":
        ctor = dict(_decoder_ctor(5, "rnn_tanh", E=1, H=9), batch=batch)
        pool.check(Call("fuzz.scenarios.core_decoder", (ctor, [("done",)]), public=False))
    elif case == "decoder":
        pool.check(Call("fuzz.scenarios.decoder", (lm, batch, [])))
    else:
        pool.check(Call("fuzz.scenarios.beam_search", (lm, [1], batch, 3)))


@known("loss_overflow")
@small
@given(reduction=st.sampled_from(["sum", "mean"]), how=st.sampled_from(["mask", "logits"]))
def test_a_loss_that_overflows_raises(pool, reduction, how):
    """Finite per-position losses whose (weighted) sum overflows: FloatingPointError, not loss = inf."""
    logits = A("float64", (8, 2), fill="range", lo=0, hi=1.7e308)
    mask = A("float64", (8,), fill="range", lo=1e300, hi=1.5e300) if how == "mask" else None
    pool.check(Call("fuzz.scenarios.loss_function", (logits, A("int64", (8,), fill="range", lo=0, hi=2)),
                    {"kwargs": {"reduction": reduction, "mask": mask}, "always_finite": True}))


@known("deep_list_arg")
@small
@given(case=st.sampled_from(["rnncore.nn.LSTM", "rnncore.nn.Linear", "bucket"]))
def test_a_deeply_nested_list_for_a_scalar(pool, case):
    """dtype=<3000-deep nested list>, num_buckets=<the same>: TypeError/ValueError, not RecursionError."""
    if case == "bucket":
        pool.check(Call("fuzz.scenarios.bucket_iterator", ([A("int64", (3,)), A("int64", (2,))],),
                        {"kwargs": {"num_buckets": Junk("deep_list")}}))
    else:
        pool.check(Call(case, (2, 3), {"dtype": Junk("deep_list")}))


@known("ubsan_memcpy_h0")
@small
@given(cell=st.sampled_from(["lstm", "gru", "rnn_tanh"]), B=st.integers(1, 3), backward=st.booleans())
def test_zero_hidden_units_in_core(pool, cell, B, backward):
    """_core.recurrent_forward/backward with H = 0: returns (B, 0) states, no undefined behaviour."""
    fwd = {"cell": cell, "x": A("float32", (3, B, 2)), "w_ih": A("float32", (0, 2)), "w_hh": A("float32", (0, 0)),
           "out": A("float32", (3, B, 0))}
    bwd = {"dy": None, "w_ih": A("float32", (0, 2)), "w_hh": A("float32", (0, 0)), "dw_ih": A("float32", (0, 2)),
           "dw_hh": A("float32", (0, 0)), "dx": A("float32", (3, B, 2))} if backward else None
    pool.check(Call("fuzz.scenarios.core_recurrent", (fwd, bwd), public=False))


@small
@given(cutoffs=st.sampled_from([[2**63, 2**63 + 1], [np.uint64(2**64 - 1)] * 2, [2, 2**64], [1.5, 2], [True, 2],
                                ["a", 2], [2**63 - 1, 2**63 - 1]]))
def test_adaptive_softmax_cutoffs_that_are_no_int64(pool, cutoffs):
    """found by the core_adaptive_softmax target: a cutoff past int64 (or not an int) gave RuntimeError
    'Unable to cast'. Now TypeError/ValueError naming cutoffs."""
    call = Call("rnncore._core.adaptive_softmax", (A("float32", (3, 2)), A("int64", (3,), fill="zeros"),
                                                   A("float32", (3, 2)), None, [A("float32", (1, 2))],
                                                   [A("float32", (1, 1))], cutoffs), public=False)
    outcome = pool.check(call)
    assert outcome.status == "raised" and outcome["exc"] in ("TypeError", "ValueError"), outcome
    assert "cutoffs" in outcome["message"], outcome


# -- regressions of fixed failures (these must pass) --------------------------------------------------

@small
@given(col=st.sampled_from([2**63 - 1, 2**62, 2**63 - 4, -1]), cell=st.sampled_from(["lstm", "gru", "rnn_relu"]))
def test_out_col_near_int64_max_is_refused(pool, col, cell):
    """issue 11 (fixed): out_col + H used to overflow, pass the range check and write before the buffer."""
    G = {"lstm": 4, "gru": 3, "rnn_relu": 1}[cell]
    fwd = {"cell": cell, "x": A("float32", (3, 2, 4)), "w_ih": A("float32", (G * 5, 4)),
           "w_hh": A("float32", (G * 5, 5)),
           "out": A("float32", (3, 2, 5), layout="guarded"), "out_col": col}
    outcome = pool.check(Call("fuzz.scenarios.core_recurrent", (fwd,), public=False))
    assert outcome.status == "raised" and outcome["exc"] == "ValueError", outcome


@small
@given(col=st.sampled_from([2**63 - 1, 2**62, -1]))
def test_dy_col_near_int64_max_is_refused(pool, col):
    """issue 11 (fixed): recurrent_backward's dy_col likewise read before dy."""
    fwd = {"cell": "lstm", "x": A("float32", (3, 2, 4)), "w_ih": A("float32", (20, 4)), "w_hh": A("float32", (20, 5)),
           "out": A("float32", (3, 2, 5))}
    bwd = {"dy": A("float32", (3, 2, 5)), "dy_col": col, "w_ih": A("float32", (20, 4)), "w_hh": A("float32", (20, 5)),
           "dw_ih": A("float32", (20, 4), fill="zeros"), "dw_hh": A("float32", (20, 5), fill="zeros"),
           "dx": A("float32", (3, 2, 4), layout="guarded")}
    outcome = pool.check(Call("fuzz.scenarios.core_recurrent", (fwd, bwd), public=False))
    assert outcome.status == "raised" and outcome["exc"] == "ValueError", outcome


def test_the_harness_sees_a_crash(pool):
    """The pool's own guarantee: a worker that dies is a failed call, and the next call gets a fresh worker."""
    outcome = pool.run(Call("fuzz.scenarios.crash_for_test", ()))
    # (under ASan the worker reports the SEGV and exits with 1 instead of dying by the signal)
    assert outcome.status == "crash" and "SEGV" in outcome["message"] + outcome["detail"], outcome
    assert pool.run(Call("rnncore._core.isa", public=False)).status == "ok"


def test_the_harness_sees_a_hang(pool):
    outcome = pool.run(Call("fuzz.scenarios.hang_for_test", ()), timeout=1)
    assert outcome.status == "hang", outcome
    assert pool.run(Call("rnncore._core.isa", public=False)).status == "ok"


def test_the_harness_sees_an_out_of_bounds_write(pool):
    outcome = pool.run(Call("fuzz.scenarios.write_past_for_test", (A("float32", (4,), layout="guarded"),)))
    assert outcome.status == "unexpected" and "out-of-bounds" in outcome["message"], outcome
