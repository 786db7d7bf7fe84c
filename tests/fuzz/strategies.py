"""Hypothesis strategies: for every entry point, a mostly valid call, then up to three mutations.

A call is first drawn valid (consistent shapes, right dtypes, ids in range, sane options), so
the kernels themselves run; then 0-3 of its arguments are mutated: another dtype (float16/32/64,
ints, bool, object, complex, str), rank or shape (0 and huge dimensions included), a memory
layout (Fortran order, strided, transposed, read-only, broadcast, unaligned), non-finite values,
ids and lengths out of range, integers at the int32/int64 edges (offsets near 2**63, thread
counts from -1 to 2**31 and beyond), odd objects (None, lists, memoryviews, generators, deeply
nested lists...). Hypothesis shrinks a failure towards fewer mutations, i.e. towards the one
argument that matters.

The builders draw through small helpers (dim, arr, pick, ...) over a few cached primitive
strategies: building strategy objects per draw costs more than the calls they describe.

TARGETS maps a target name to (strategy of Call, names it covers, relative weight).
"""
import math
import zlib

import numpy as np
from hypothesis import strategies as st

from fuzz.known import MANY_THREADS_OK, is_known
from fuzz.specs import FLOAT_FILLS, LAYOUTS, A, Call, Junk

FLOATS = ("float32", "float64")
ODD_DTYPES = ("float16", "int64", "int32", "int8", "uint8", "uint64", "bool", "object", "complex64",
              "complex128", "<U1")
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
MIDS = (5, 7, 8, 9, 16, 17, 31, 33)  # past a SIMD width or a block edge
VALID_LAYOUTS = ("C", "C", "guarded")

INT_EDGES = (0, -1, 1, 2, 3, -2, 7, 64, 1000, 40000, 100000, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32,
             2**62, 2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64, 10**30)
DEEP = () if is_known("deep_list_arg") else (Junk("deep_list"),)  # a 3000-deep nested list
INT_ODD = (None, True, 1.5, math.nan, "3", np.int64(2), np.uint64(2**64 - 1)) + DEEP
FLOAT_EDGES = (math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1e308, -1e308, 5e-324, 1e-30, 2.0**63, 0.5, 1.5)
FLOAT_ODD = (None, True, "0.1", np.float32(0.5), 10**400, (0.9, 0.999), 1 + 2j) + DEEP
STR_EDGES = ("", "LSTM", " gru", "x" * 300, "\x00", "mean", "none", "sum", "tanh", "relu", "rnn", "\u00e9")
STR_ODD = (None, 1, Junk("bytes"), Junk("object")) + DEEP
BOOL_ODD = (None, 2, "yes", np.bool_(True), 0.0) + DEEP
OTHER = (None, 0, -1, 2**63, "x", Junk("object"), Junk("list"), Junk("dict"), Junk("set"),
         A("float32", (2, 3)), A("int64", (3,)), A("object", (2,))) + DEEP
NOT_ARRAYS = (None, Junk("list"), Junk("nested"), Junk("memoryview"), Junk("object"), 3, 2.5, "x",
              Junk("generator")) + DEEP
FILLS = FLOAT_FILLS + ("range", "extreme")
RANGE_LO = (-2**63, -100, -1, 0, 2**62, 2**63 - 2)
RANGE_HI = (1, 100, 2**63 - 1)
HUGE_DIMS = (1 << 31, 1 << 40)  # copying such a view needs > 4 GiB: refused at once
THREAD_ODD = (None, 1.5, "2", True)

# -- cached primitives and the drawing helpers -----------------------------------------------------

BOOL = st.booleans()
_ints = {}


def ints(lo, hi):
    """st.integers(lo, hi), one object per range."""
    s = _ints.get((lo, hi))
    if s is None:
        s = _ints[(lo, hi)] = st.integers(lo, hi)
    return s


def rint(draw, lo, hi):
    return draw(ints(lo, hi))


def pick(draw, options):
    """One of `options` (shrinks towards the first)."""
    return options[draw(ints(0, len(options) - 1))]


def coin(draw):
    return draw(BOOL)


def dim(draw, lo=0):
    """A dimension: mostly tiny, sometimes past a SIMD width or a block boundary."""
    k = rint(draw, 0, 2)
    v = rint(draw, 0, 4) if k == 0 else rint(draw, 1, 4) if k == 1 else pick(draw, MIDS)
    return max(v, lo)


def pos(draw):
    return dim(draw, 1)


def shape(draw, max_rank, lo=0):
    return tuple(dim(draw, lo) for _ in range(rint(draw, 0, max_rank)))


def arr(draw, dtype, shp, lo=None, hi=None, fill=None):
    """A valid array recipe: contiguous (or guarded), normal values (or ints in [lo, hi))."""
    k = rint(draw, 0, 3 * len(VALID_LAYOUTS) - 1)  # one draw for the layout and a seed salt
    seed = (zlib.crc32(repr((dtype, shp)).encode()) + k // len(VALID_LAYOUTS)) & 0xFFFF
    return A(dtype, tuple(shp), fill, VALID_LAYOUTS[k % len(VALID_LAYOUTS)], seed, lo, hi)


def ids(draw, shp, V):
    return arr(draw, "int64", shp, 0, max(V, 1), fill="range" if V > 0 else "zeros")


def maybe(draw, make):
    """make() or None."""
    return make() if coin(draw) else None


def floats(draw):
    return pick(draw, FLOATS)


def threads_value(draw, public=True):
    """A valid thread request: None (the default) for the public API, or a small count."""
    return pick(draw, (None, None, 1, 2, 3, -1) if public else (1, 1, 2, 3))


def _thread_edges():
    values = INT_EDGES
    if is_known("threads_2_31"):
        values = tuple(v for v in values if v < 2**31)
    if not MANY_THREADS_OK:  # under ASan: nothing between 65 and 2**31 (see known.py)
        values = tuple(v for v in values if v <= 64 or v >= 2**31)
    return values


def threads_edge(draw):
    """Every kind of thread count, minus the regions known to fail today (known.py)."""
    k = rint(draw, 0, 2)
    if k == 0:
        return pick(draw, _thread_edges())
    if k == 1:
        return rint(draw, -5, 70)
    return pick(draw, THREAD_ODD)


# -- mutations --------------------------------------------------------------------------------------

def _mutated_shape(draw, shp):
    k = rint(draw, 0, 5 if shp else 2)
    if k == 0:
        return ()
    if k == 1:
        return tuple(shp) + (1,)
    if k == 2:
        return tuple(shp) + (2, 2)
    if k == 3:
        return tuple(shp)[:-1]
    i = rint(draw, 0, len(shp) - 1)
    new = pick(draw, (0, 1, 2, 3, 5, 40)) if k == 4 else shp[i] + 1
    return tuple(new if j == i else s for j, s in enumerate(shp))


def mutate_array(draw, a, huge=True):
    """Another dtype, shape, layout or fill; a huge (broadcast) shape; or not an array at all.
    Without `huge`, the "huge" shapes stop at 4096 (for entry points whose O(N) work on a huge
    view is legitimate)."""
    k = rint(draw, 0, 6)
    if k == 0:
        return a.replace(dtype=pick(draw, FLOATS + ODD_DTYPES))
    if k == 1:
        return a.replace(shape=_mutated_shape(draw, a.shape))
    if k == 2:
        return a.replace(layout=pick(draw, LAYOUTS))
    if k == 3:
        return a.replace(fill=pick(draw, FILLS))
    if k == 4:
        return a.replace(fill="range", lo=pick(draw, RANGE_LO), hi=pick(draw, RANGE_HI))
    if k == 5:
        base = a.shape or (1,)
        i = rint(draw, 0, len(base) - 1)
        big = pick(draw, HUGE_DIMS) if huge else 1 << 12
        return a.replace(shape=tuple(big if j == i else max(s, 1) for j, s in enumerate(base)), layout="broadcast")
    return pick(draw, NOT_ARRAYS)


def mutate_int(draw, v):
    k = rint(draw, 0, 2)
    if k == 0:
        return pick(draw, INT_EDGES)
    if k == 1:
        return rint(draw, -3, 40)
    return pick(draw, INT_ODD)


def mutate_float(draw, v):
    k = rint(draw, 0, 2)
    if k == 0:
        return pick(draw, FLOAT_EDGES)
    if k == 1:
        return draw(st.floats(allow_nan=True, allow_infinity=True))
    return pick(draw, FLOAT_ODD)


def mutate_str(draw, v):
    k = rint(draw, 0, 2)
    if k == 0:
        return pick(draw, STR_EDGES)
    if k == 1:
        return v.upper() if v.upper() != v else v + "_"
    return pick(draw, STR_ODD)


# Keys whose mutations leave out a known failure (known.py) while it is known.
def _key_rules():
    rules = {}
    if is_known("num_layers_huge"):
        rules["num_layers"] = tuple(v for v in INT_EDGES if v < 1000) + (None, 1.5, "2")
    # a beam search of 2**31 steps is legitimate work, not a hang: keep max_len (also the first
    # argument of a decoder's beam_search op) below 1000
    # (likewise the step counts the optimizer and scheduler scenarios loop over)
    rules["max_len"] = rules["beam_search.1"] = tuple(v for v in INT_EDGES if v < 1000) + (None, 1.5, "2")
    rules["steps"] = rules["windows"] = (0, 1, 2, 7, 64)
    rules["repeat"] = (0, 1, 2, -1, 7, None, 1.5)  # gemm_packed_test's benchmark loop
    if is_known("decoder_batch_overflow"):
        for key in ("batch", "beam_width"):
            rules[key] = tuple(v for v in INT_EDGES if v < 2**31) + (None, 1.5, "2")

    if is_known("int64_args"):
        small = tuple(v for v in INT_EDGES if -2**63 <= v < 2**63) + (None, 1.5, "2")
        for key in ("top_k", "max_new_tokens", "beam_width", "n_best", "chunk", "ignore_index", "step"):
            rules[key] = tuple(v for v in small if v in rules.get(key, small))
    return rules


KEY_RULES = _key_rules()


def mutate_value(draw, v, key=None, huge=True):
    """A replacement for `v` (the argument named `key`, when it has a name)."""
    if key == "threads":
        return threads_edge(draw)
    if key in KEY_RULES:
        return pick(draw, KEY_RULES[key])
    if isinstance(v, A):
        return mutate_array(draw, v, huge)
    if isinstance(v, bool):
        return pick(draw, (not v,) + BOOL_ODD)
    if isinstance(v, int):
        return mutate_int(draw, v)
    if isinstance(v, float):
        return mutate_float(draw, v)
    if isinstance(v, str):
        return mutate_str(draw, v)
    if isinstance(v, (list, tuple)):
        k = rint(draw, 0, 3)
        if k == 0:
            return pick(draw, OTHER)
        if k == 1:
            return type(v)()
        if k == 2:
            return type(v)(list(v) + list(v[:1]))
        return type(v)(v[:-1])
    if isinstance(v, dict):
        k = rint(draw, 0, 2)
        if k == 0:
            return pick(draw, OTHER)
        return {} if k == 1 else dict(v, bogus_key=1)
    return pick(draw, OTHER)


def _paths(value, prefix=()):
    """Paths to every mutable part of an argument structure (containers included)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


def _get(value, path):
    for p in path:
        value = value[p]
    return value


def _set(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        out = dict(value)
        out[head] = _set(value[head], rest, new)
        return out
    seq = list(value)
    seq[head] = _set(value[head], rest, new)
    return type(value)(seq) if isinstance(value, tuple) else seq


def _is_op_name(path):
    """A scenario's op list, one of its ops, or an op's method name ("ops", i, 0): selectors, not
    arguments (an op's arguments are mutated)."""
    return path[0] == "ops" and (len(path) <= 2 or (len(path) == 3 and path[2] == 0))


def call(fn, build, public=True, allow=(), max_mutations=3, frozen=(), positional=(), huge=True):
    """A strategy of Call(fn, ...): build(draw) gives valid arguments (a dict), then up to
    `max_mutations` of its parts are replaced. Keys in `frozen` (a scenario's selector, e.g. the
    class name) are never mutated; `positional` names the arguments passed by position, in
    order; `huge` allows huge (broadcast) array shapes."""
    @st.composite
    def strategy(draw):
        args = build(draw)
        for _ in range(rint(draw, 0, max_mutations)):
            paths = [p for p in _paths(args) if p[0] not in frozen and not _is_op_name(p)]
            if not paths:
                break
            path = pick(draw, paths)
            key = path[-1] if isinstance(path[-1], str) else None
            if path[0] == "ops" and len(path) == 3:  # an op's argument: named "<method>.<position>"
                key = f"{args['ops'][path[1]][0]}.{path[2]}"
            args = _set(args, path, mutate_value(draw, _get(args, path), key, huge))
        pos_args = tuple(args.pop(k) for k in positional if k in args)
        return Call(fn, pos_args, args, public=public, allow=allow)
    return strategy()


# -- _core: ops -------------------------------------------------------------------------------------

def b_embedding_forward(draw):
    V, E, dt = dim(draw), dim(draw), floats(draw)
    return {"weight": arr(draw, dt, (V, E)), "ids": ids(draw, shape(draw, 3), V), "threads": threads_value(draw, False)}


def b_embedding_backward(draw):
    V, E, dt = dim(draw), dim(draw), floats(draw)
    lead = shape(draw, 3)
    return {"dout": arr(draw, dt, lead + (E,)), "ids": ids(draw, lead, V), "dweight": arr(draw, dt, (V, E)),
            "padding_idx": rint(draw, -1, max(V - 1, -1)), "threads": threads_value(draw, False)}


def b_linear_forward(draw):
    N, I, O, dt = dim(draw), dim(draw), dim(draw), floats(draw)
    return {"x": arr(draw, dt, (N, I)), "weight": arr(draw, dt, (O, I)),
            "bias": maybe(draw, lambda: arr(draw, dt, (O,))),
            "threads": threads_value(draw, False)}


def b_linear_backward(draw):
    N, I, O, dt = dim(draw), dim(draw), dim(draw), floats(draw)
    return {"dy": arr(draw, dt, (N, O)), "x": arr(draw, dt, (N, I)), "weight": arr(draw, dt, (O, I)),
            "dweight": arr(draw, dt, (O, I)), "dbias": maybe(draw, lambda: arr(draw, dt, (O,))),
            "need_dx": coin(draw), "threads": threads_value(draw, False)}


def b_layernorm_forward(draw):
    N, C, dt = dim(draw), dim(draw), floats(draw)
    return {"x": arr(draw, dt, (N, C)), "weight": maybe(draw, lambda: arr(draw, dt, (C,))),
            "bias": maybe(draw, lambda: arr(draw, dt, (C,))), "eps": pick(draw, (1e-5, 0.0, 1.0)),
            "threads": threads_value(draw, False)}


def b_layernorm_backward(draw):
    N, C, dt = dim(draw), dim(draw), floats(draw)
    return {"dy": arr(draw, dt, (N, C)), "x": arr(draw, dt, (N, C)), "mean": arr(draw, dt, (N,)),
            "rstd": arr(draw, dt, (N,)), "weight": maybe(draw, lambda: arr(draw, dt, (C,))),
            "dweight": maybe(draw, lambda: arr(draw, dt, (C,))), "dbias": maybe(draw, lambda: arr(draw, dt, (C,))),
            "threads": threads_value(draw, False)}


def b_cross_entropy(draw):
    lead, V, dt = shape(draw, 2), pos(draw), floats(draw)
    return {"logits": arr(draw, dt, lead + (V,)), "targets": ids(draw, lead, V),
            "mask": maybe(draw, lambda: arr(draw, dt, lead, fill="ones")), "ignore_index": pick(draw, (-100, 0, -1)),
            "reduction": pick(draw, ("mean", "sum", "none")), "compute_grad": coin(draw),
            "return_probs": coin(draw), "threads": threads_value(draw, False)}


def b_gemm(draw, strided=False):
    M, N, K = dim(draw), dim(draw), dim(draw)
    ta, tb, dt = coin(draw), coin(draw), floats(draw)
    in_layouts = ("C", "rowpad") if strided else ("C",)
    out_layouts = ("C", "rowpad") if strided else ("C", "guarded")
    a = arr(draw, dt, (K, M) if ta else (M, K)).replace(layout=pick(draw, in_layouts))
    b = arr(draw, dt, (N, K) if tb else (K, N)).replace(layout=pick(draw, in_layouts))
    c = arr(draw, dt, (M, N)).replace(layout=pick(draw, out_layouts))
    return {"a": a, "b": b, "c": c, "trans_a": ta, "trans_b": tb, "alpha": pick(draw, (1.0, 0.5, -2.0)),
            "beta": pick(draw, (0.0, 1.0, 0.25)), "threads": threads_value(draw, False)}


def b_gemm_packed(draw):
    M, N, K = dim(draw), dim(draw), dim(draw)
    tb, dt = coin(draw), floats(draw)
    lay = ("C", "rowpad")
    return {"a": arr(draw, dt, (M, K)).replace(layout=pick(draw, lay)),
            "b": arr(draw, dt, (N, K) if tb else (K, N)).replace(layout=pick(draw, lay)), "trans_b": tb,
            "beta": pick(draw, (0.0, 1.0)), "c": arr(draw, dt, (M, N)).replace(layout=pick(draw, lay)),
            "repeat": rint(draw, 1, 2)}


def b_gemm_threads(draw):
    return {"M": dim(draw), "N": dim(draw), "K": dim(draw), "threads": rint(draw, 1, 8)}


def b_recurrent_threads(draw):
    cell, H = pick(draw, CELLS), dim(draw)
    call = {"cell": cell, "B": dim(draw), "H": H, "threads": rint(draw, 1, 8)}
    if cell == "lstm" and H >= 2 and coin(draw):
        call["proj_size"] = rint(draw, 1, H - 1)  # an LSTM with projections (issue 17)
    return call


# -- _core: optimizer steps and list kernels ----------------------------------------------------------

def b_step(draw, kind):
    shp, dt = shape(draw, 2), floats(draw)

    def a(fill=None):
        return arr(draw, dt, shp, fill=fill)

    out = {"param": a(), "grad": a()}
    if kind == "sgd":
        momentum = pick(draw, (0.0, 0.9))
        out.update(momentum_buffer=a() if momentum else None, lr=0.1, momentum=momentum,
                   dampening=pick(draw, (0.0, 0.1)), weight_decay=pick(draw, (0.0, 0.01)),
                   nesterov=coin(draw) and momentum > 0, maximize=coin(draw), first=coin(draw))
    elif kind == "adam":
        amsgrad = coin(draw)
        out.update(exp_avg=a("zeros"), exp_avg_sq=a("zeros"), max_exp_avg_sq=a("zeros") if amsgrad else None,
                   step=rint(draw, 1, 5), lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                   weight_decay=pick(draw, (0.0, 0.01)), decoupled=coin(draw), amsgrad=amsgrad, maximize=coin(draw))
    elif kind == "rmsprop":
        centered, momentum = coin(draw), pick(draw, (0.0, 0.9))
        out.update(square_avg=a("zeros"), grad_avg=a("zeros") if centered else None,
                   momentum_buffer=a("zeros") if momentum else None, lr=1e-2, alpha=0.99, eps=1e-8,
                   weight_decay=0.0, momentum=momentum, centered=centered, maximize=coin(draw))
    else:
        out.update(sum=a("zeros"), step=rint(draw, 1, 5), lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
                   maximize=coin(draw))
    out["threads"] = threads_value(draw, False)
    return out


def b_array_list(draw, which):
    arrays = [arr(draw, floats(draw), shape(draw, 2)) for _ in range(rint(draw, 0, 3))]
    out = {"arrays": arrays, "threads": threads_value(draw, False)}
    if which == "clamp_":
        out.update(lo=-0.5, hi=0.5)
    elif which == "scale_":
        out.update(scale=pick(draw, (0.5, 2.0, 0.0)))
    else:
        out.update(norm_type=pick(draw, (2.0, 1.0, math.inf, 3.0)))
    return out


def b_vmath(draw):
    return {"fn": pick(draw, ("exp", "sigmoid", "tanh")), "x": arr(draw, "float32", shape(draw, 2)),
            "kernel": pick(draw, (None, "generic", "avx2", "avx512"))}


# -- _core: one cell step on a chosen kernel set (bind_cells.cpp) --------------------------------------

def _cell_step_common(draw):
    cell, B, H, dt = pick(draw, CELLS), dim(draw), dim(draw), floats(draw)
    lo = rint(draw, 0, H)
    hi = rint(draw, lo, H)
    kernel = pick(draw, (None, "generic") if dt == "float64" else (None, "generic", "avx2", "avx512"))
    return cell, B, H, dt, lo, hi, kernel


def b_cell_forward_test(draw):
    cell, B, H, dt, lo, hi, kernel = _cell_step_common(draw)
    G = GATES[cell]
    call = {"cell": cell, "gates": arr(draw, dt, (B, G * H)), "hg": arr(draw, dt, (B, G * (hi - lo))),
            "h_prev": arr(draw, dt, (B, H)), "kernel": kernel, "units": (lo, hi), "repeat": rint(draw, 1, 2)}
    if cell == "lstm":
        call["c_prev"] = arr(draw, dt, (B, H))
    if coin(draw):
        call["bias"] = arr(draw, dt, (G * H,))
    if cell == "gru" and coin(draw):
        call["b_hn"] = arr(draw, dt, (H,))
    return call


def b_cell_backward_test(draw):
    cell, B, H, dt, lo, hi, kernel = _cell_step_common(draw)
    G = GATES[cell]
    call = {"cell": cell, "gates": arr(draw, dt, (B, G * H)), "h_prev": arr(draw, dt, (B, H)),
            "h": arr(draw, dt, (B, H)), "dh_carry": arr(draw, dt, (B, H)), "kernel": kernel, "units": (lo, hi),
            "repeat": rint(draw, 1, 2)}
    if coin(draw):
        call["dy"] = arr(draw, dt, (B, H))
    if cell == "lstm":
        call.update(c_prev=arr(draw, dt, (B, H)), c=arr(draw, dt, (B, H)), dc=arr(draw, dt, (B, H)))
    if cell == "gru":
        call["hn"] = arr(draw, dt, (B, H))
    return call


def b_info(draw):
    return {}


# -- _core: recurrent layers and the decoder ----------------------------------------------------------

def b_core_recurrent(draw):
    cell = pick(draw, CELLS)
    T, B, I, H = dim(draw), dim(draw), dim(draw), dim(draw, 1 if is_known("ubsan_memcpy_h0") else 0)
    G, dt = GATES[cell], floats(draw)
    extra = pick(draw, (0, 0, 3))
    # An LSTM with projections (issue 17): w_hr (P, H), h and the outputs P wide.
    P = rint(draw, 1, H - 1) if cell == "lstm" and H >= 2 and rint(draw, 0, 2) == 0 else 0
    R = P or H

    def opt(shp):
        return maybe(draw, lambda: arr(draw, dt, shp))

    fwd = {"cell": cell, "x": arr(draw, dt, (T, B, I)), "w_ih": arr(draw, dt, (G * H, I)),
           "w_hh": arr(draw, dt, (G * H, R)), "b_ih": opt((G * H,)), "b_hh": opt((G * H,)), "h0": opt((B, R)),
           "c0": opt((B, H)) if cell == "lstm" else None,
           "lengths": maybe(draw, lambda: arr(draw, "int64", (B,), 0, T + 1, fill="range")),
           "reverse": coin(draw), "out": arr(draw, dt, (T, B, R + extra)), "out_col": rint(draw, 0, extra),
           "threads": threads_value(draw, False), "workspace": pick(draw, (None, Junk("workspace"))),
           "bf16": pick(draw, (False, False, True))}  # bf16 mixed precision (issue 16); float64: TypeError
    if P:
        fwd["w_hr"] = arr(draw, dt, (P, H))
    bwd = None
    if coin(draw):
        dy_extra = pick(draw, (0, 0, 2))
        bwd = {"dy": opt((T, B, R + dy_extra)), "dy_col": rint(draw, 0, dy_extra), "dh_n": opt((B, R)),
               "dc_n": opt((B, H)) if cell == "lstm" else None, "w_ih": fwd["w_ih"], "w_hh": fwd["w_hh"],
               "dw_ih": arr(draw, dt, (G * H, I), fill="zeros"), "dw_hh": arr(draw, dt, (G * H, R), fill="zeros"),
               "db_ih": opt((G * H,)), "db_hh": opt((G * H,)), "dx": arr(draw, dt, (T, B, I)),
               "accumulate_dx": coin(draw), "threads": threads_value(draw, False),
               "grad_norms": maybe(draw, lambda: arr(draw, pick(draw, ("float64", dt)), (T, B), fill="zeros"))}
        if P:
            bwd["w_hr"] = fwd["w_hr"]
            bwd["dw_hr"] = arr(draw, dt, (P, H), fill="zeros")
    return {"forward": fwd, "backward": bwd, "reuse": coin(draw)}


def _stop_tokens(draw, V):
    return maybe(draw, lambda: [rint(draw, 0, max(V - 1, 0)) for _ in range(rint(draw, 0, 2))])


def b_core_decoder(draw, V_lo=1, ops=None):
    cell = pick(draw, CELLS + ("LSTM",))
    dt = floats(draw)
    V, E, H, L, B = dim(draw, V_lo), pos(draw), pos(draw), rint(draw, 1, 2), pos(draw)
    G = GATES[cell.lower()]
    # An LSTM with projections (issue 17): a fifth weight w_hr (P, H) per layer, h P wide.
    P = rint(draw, 1, H - 1) if cell.lower() == "lstm" and H >= 2 and rint(draw, 0, 2) == 0 else 0
    R = P or H

    def opt(shp):
        return maybe(draw, lambda: arr(draw, dt, shp))

    layers = [(arr(draw, dt, (G * H, E if l == 0 else R)), arr(draw, dt, (G * H, R)), opt((G * H,)), opt((G * H,)))
              + ((arr(draw, dt, (P, H)),) if P else ()) for l in range(L)]
    ctor = {"cell": cell, "embedding": arr(draw, dt, (V, E)), "layers": layers, "w_out": arr(draw, dt, (V, R)),
            "b_out": opt((V,)), "batch": B, "threads": threads_value(draw, False)}
    is_lstm = cell.lower() == "lstm"
    names = ops or ("seed", "set_next_tokens", "mark_seen", "sample", "step_logits", "get_state", "set_state",
                    "beam_search", "done", "vocab_size", "batch")
    out = []
    for _ in range(rint(draw, 0, 5) if ops is None else len(ops)):
        op = pick(draw, names)
        if op == "seed":
            out.append((op, rint(draw, 0, 2**64 - 1)))
        elif op == "set_next_tokens":
            out.append((op, ids(draw, (B,), V)))
        elif op == "mark_seen":
            out.append((op, ids(draw, (B, dim(draw)), V)))
        elif op == "sample":
            out.append((op, rint(draw, 0, 6), pick(draw, (1.0, 0.0, 0.7)), rint(draw, 0, 3), pick(draw, (1.0, 0.9)),
                        pick(draw, (1.0, 1.3)), _stop_tokens(draw, V)))
        elif op == "set_state":
            out.append((op, arr(draw, dt, (L, B, R)), arr(draw, dt, (L, B, H)) if is_lstm else None))
        elif op == "beam_search":
            out.append((op, rint(draw, 1, 5), pick(draw, (0.0, 0.6)), rint(draw, 1, B), _stop_tokens(draw, V)))
        else:
            out.append((op,))
    return {"ctor": ctor, "ops": out}


# -- public: rnncore.nn -------------------------------------------------------------------------------

DTYPE_ARGS = (np.float32, np.float64, "float32", "float64")


def b_rnn_layer(draw):
    cls = pick(draw, ("RNN", "LSTM", "GRU"))
    I, H, L = pos(draw), pos(draw), rint(draw, 1, 2)
    bidir, batch_first = coin(draw), coin(draw)
    dtype = pick(draw, DTYPE_ARGS)
    dt = np.dtype(dtype).name
    ctor = {"input_size": I, "hidden_size": H, "num_layers": L, "bias": coin(draw), "batch_first": batch_first,
            "dropout": pick(draw, (0.0, 0.0, 0.3)) if L > 1 else 0.0, "bidirectional": bidir, "dtype": dtype,
            "seed": rint(draw, 0, 5), "threads": threads_value(draw)}
    if cls == "RNN":
        ctor["nonlinearity"] = pick(draw, ("tanh", "relu"))
    ctor["precision"] = pick(draw, (None, None, "fp32", "bf16"))  # bf16 with float64: TypeError
    R = H
    if cls == "LSTM" and H >= 2 and rint(draw, 0, 2) == 0:
        ctor["proj_size"] = R = rint(draw, 1, H - 1)  # projections (issue 17): h is P wide
    T, B = dim(draw), dim(draw)
    batched = rint(draw, 0, 3) > 0
    x_shape = ((B, T, I) if batch_first else (T, B, I)) if batched else (T, I)
    LD = L * (2 if bidir else 1)
    state = (LD, B, H) if batched else (LD, H)
    h_state = (LD, B, R) if batched else (LD, R)
    h = maybe(draw, lambda: arr(draw, dt, h_state))
    hx = (h, arr(draw, dt, state)) if (cls == "LSTM" and h is not None) else h
    return {"cls": cls, "ctor": ctor, "x": arr(draw, dt, x_shape), "hx": hx,
            "lengths": maybe(draw, lambda: arr(draw, "int64", (B,), 0, T + 1, fill="range")) if batched else None,
            "grad": "ones", "grad_h_n": pick(draw, (None, "ones")), "train": coin(draw), "backward": True,
            "record_grad_norms": coin(draw)}


def b_diagnostics(draw):
    T, B = dim(draw), dim(draw)
    dt = floats(draw)
    cell = pick(draw, ("RNN", "LSTM", "GRU"))
    H = pos(draw)
    ctor = {"input_size": pos(draw), "hidden_size": H, "num_layers": rint(draw, 1, 2), "bidirectional": coin(draw),
            "seed": 0}
    if cell == "LSTM" and H >= 2 and coin(draw):
        ctor["proj_size"] = rint(draw, 1, H - 1)
    return {"norms": arr(draw, pick(draw, ("float64", dt)), pick(draw, ((T, B), (T,), (T, B, 1)))),
            "lengths": maybe(draw, lambda: arr(draw, "int64", (B,), 0, T + 1, fill="range")),
            "reverse": coin(draw), "cls": cell, "ctor": ctor, "model": pick(draw, ("layer", "classifier", Junk("object")))}


def b_rnn_cell(draw):
    cls = pick(draw, ("RNNCell", "LSTMCell", "GRUCell"))
    I, H, B = pos(draw), pos(draw), dim(draw)
    dtype = pick(draw, DTYPE_ARGS)
    dt = np.dtype(dtype).name
    ctor = {"input_size": I, "hidden_size": H, "bias": coin(draw), "dtype": dtype, "seed": 1,
            "threads": threads_value(draw)}
    if cls == "RNNCell":
        ctor["nonlinearity"] = pick(draw, ("tanh", "relu"))
    batched = coin(draw)
    xs, hs = ((B, I), (B, H)) if batched else ((I,), (H,))
    h = maybe(draw, lambda: arr(draw, dt, hs))
    hx = (h, arr(draw, dt, hs)) if (cls == "LSTMCell" and h is not None) else h
    return {"cls": cls, "ctor": ctor, "xs": [arr(draw, dt, xs) for _ in range(rint(draw, 1, 3))], "hx": hx,
            "grad": "ones", "train": coin(draw)}


def b_embedding(draw):
    V, E = pos(draw), pos(draw)
    return {"ctor": {"num_embeddings": V, "embedding_dim": E,
                     "padding_idx": maybe(draw, lambda: rint(draw, -V, V - 1)), "dtype": pick(draw, DTYPE_ARGS),
                     "seed": 0, "threads": threads_value(draw)},
            "ids": ids(draw, shape(draw, 3), V), "grad": "ones"}


def b_linear(draw):
    I, O = pos(draw), pos(draw)
    dtype = pick(draw, DTYPE_ARGS)
    return {"ctor": {"in_features": I, "out_features": O, "bias": coin(draw), "dtype": dtype, "seed": 0,
                     "threads": threads_value(draw)},
            "x": arr(draw, np.dtype(dtype).name, shape(draw, 2) + (I,)), "grad": "ones", "need_input_grad": coin(draw)}


def b_dropout(draw):
    return {"ctor": {"p": pick(draw, (0.0, 0.5, 1.0, 0.2)), "seed": 0}, "x": arr(draw, floats(draw), shape(draw, 3)),
            "grad": "ones", "train": coin(draw)}


def b_layernorm(draw):
    norm = shape(draw, 2, lo=1) or (pos(draw),)
    dtype = pick(draw, DTYPE_ARGS)
    return {"ctor": {"normalized_shape": norm if len(norm) > 1 or coin(draw) else norm[0],
                     "eps": pick(draw, (1e-5, 0.0, 1e-3)), "elementwise_affine": coin(draw), "bias": coin(draw),
                     "dtype": dtype, "threads": threads_value(draw)},
            "x": arr(draw, np.dtype(dtype).name, shape(draw, 2) + norm), "grad": "ones"}


def b_loss_function(draw):
    lead, V, dt = shape(draw, 2), pos(draw), floats(draw)
    mask = pick(draw, (None, "bool", "float"))
    kwargs = {"ignore_index": pick(draw, (-100, 0)), "reduction": pick(draw, ("mean", "sum", "none")),
              "mask": None if mask is None else arr(draw, "bool" if mask == "bool" else dt, lead,
                                                    fill=None if mask == "bool" else "ones"),
              "return_probs": coin(draw), "compute_grad": coin(draw), "threads": threads_value(draw)}
    return {"logits": arr(draw, dt, lead + (V,)), "targets": ids(draw, lead, V), "kwargs": kwargs}


def b_loss_module(draw):
    lead, V, dt = shape(draw, 2), pos(draw), floats(draw)
    reduction = pick(draw, ("mean", "sum", "none"))
    return {"ctor": {"ignore_index": -100, "reduction": reduction, "threads": threads_value(draw)},
            "logits": arr(draw, dt, lead + (V,)), "targets": ids(draw, lead, V),
            "mask": maybe(draw, lambda: arr(draw, dt, lead, fill="ones")),
            "grad": arr(draw, dt, lead) if reduction == "none" else 1.0}


def _lm_ctor(draw):
    V, E = pos(draw), pos(draw)
    tie = coin(draw)
    return {"vocab_size": V, "embedding_dim": E, "hidden_size": E if tie else pos(draw), "num_layers": rint(draw, 1, 2),
            "cell": pick(draw, ("lstm", "gru", "rnn", "rnn_tanh", "rnn_relu")), "dropout": pick(draw, (0.0, 0.25)),
            "tie_weights": tie, "batch_first": coin(draw), "padding_idx": maybe(draw, lambda: rint(draw, 0, V - 1)),
            "dtype": pick(draw, DTYPE_ARGS), "seed": 0, "threads": threads_value(draw)}


WEIGHTS = (None, None, None, "nan", "inf_bias", "zero", "big")


def _maybe_proj(draw, ctor):
    """Sometimes an LSTM with projections (issue 17): proj_size in [1, H), tied weights then need P == E."""
    H = ctor["hidden_size"]
    if ctor["cell"] == "lstm" and H >= 2 and rint(draw, 0, 2) == 0:
        ctor["proj_size"] = rint(draw, 1, H - 1)
        if ctor["tie_weights"]:
            ctor["embedding_dim"] = ctor["proj_size"]
    return ctor


def b_language_model(draw):
    ctor = _maybe_proj(draw, _lm_ctor(draw))
    T, B = dim(draw), dim(draw)
    shp = (B, T) if ctor["batch_first"] else (T, B)
    V = ctor["vocab_size"]
    return {"ctor": ctor, "tokens": ids(draw, shp, V), "targets": ids(draw, shp, V), "state": None,
            "mask": maybe(draw, lambda: arr(draw, "bool", shp)),
            "loss_kwargs": {"reduction": pick(draw, ("mean", "sum"))}, "train": coin(draw),
            "weights": pick(draw, WEIGHTS[:-1])}


def _encoder_ctor(draw):
    ctor = {"hidden_size": pos(draw), "num_classes": pos(draw), "num_layers": rint(draw, 1, 2),
            "cell": pick(draw, ("lstm", "gru", "rnn")), "bidirectional": coin(draw), "dropout": pick(draw, (0.0, 0.2)),
            "batch_first": coin(draw), "dtype": pick(draw, DTYPE_ARGS), "seed": 0, "threads": threads_value(draw)}
    if coin(draw):
        ctor.update(vocab_size=pos(draw), embedding_dim=pos(draw))
    else:
        ctor.update(input_size=pos(draw))
    return ctor


def _encoder_input(draw, ctor, T, B):
    shp = (B, T) if ctor["batch_first"] else (T, B)
    if "vocab_size" in ctor:
        return ids(draw, shp, ctor["vocab_size"])
    return arr(draw, np.dtype(ctor["dtype"]).name, shp + (ctor["input_size"],))


def b_sequence_classifier(draw):
    ctor = _encoder_ctor(draw)
    ctor["pooling"] = pick(draw, ("last", "mean", "max"))
    T, B = dim(draw), dim(draw)
    return {"ctor": ctor, "x": _encoder_input(draw, ctor, T, B), "labels": ids(draw, (B,), ctor["num_classes"]),
            "lengths": maybe(draw, lambda: arr(draw, "int64", (B,), 0, T + 1, fill="range")),
            "reduction": pick(draw, ("mean", "sum")), "train": coin(draw)}


def b_sequence_tagger(draw):
    ctor = _encoder_ctor(draw)
    T, B = dim(draw), dim(draw)
    shp = (B, T) if ctor["batch_first"] else (T, B)
    return {"ctor": ctor, "x": _encoder_input(draw, ctor, T, B), "tags": ids(draw, shp, ctor["num_classes"]),
            "lengths": maybe(draw, lambda: arr(draw, "int64", (B,), 0, T + 1, fill="range")),
            "ignore_index": -100, "train": coin(draw)}


def b_conditioned_generator(draw):
    ctor = _lm_ctor(draw)
    ctor["feature_size"] = pos(draw)
    ctor["condition"] = pick(draw, ("init", "input", "both"))
    T, B = dim(draw), dim(draw)
    shp = (B, T) if ctor["batch_first"] else (T, B)
    V = ctor["vocab_size"]
    return {"ctor": ctor, "features": arr(draw, np.dtype(ctor["dtype"]).name, (B, ctor["feature_size"])),
            "tokens": ids(draw, shp, V), "targets": ids(draw, shp, V), "state": None, "train": coin(draw)}


MODEL_KINDS = ("LSTM", "GRU", "RNN", "Linear", "Embedding", "LanguageModel", "LSTMCell")


def _small_model(draw):
    kind = pick(draw, MODEL_KINDS)
    if kind in ("LSTM", "GRU", "RNN"):
        ctor = {"input_size": pos(draw), "hidden_size": pos(draw), "num_layers": rint(draw, 1, 2),
                "bidirectional": coin(draw)}
    elif kind == "LSTMCell":
        ctor = {"input_size": pos(draw), "hidden_size": pos(draw)}
    elif kind == "Linear":
        ctor = {"in_features": pos(draw), "out_features": pos(draw)}
    elif kind == "Embedding":
        ctor = {"num_embeddings": pos(draw), "embedding_dim": pos(draw)}
    else:
        ctor = {"vocab_size": pos(draw), "embedding_dim": 4, "hidden_size": 4, "tie_weights": coin(draw)}
    ctor["dtype"] = pick(draw, DTYPE_ARGS)
    return kind, ctor


def b_module_api(draw):
    kind, ctor = _small_model(draw)
    ops = []
    for _ in range(rint(draw, 0, 4)):
        op = pick(draw, ("to", "zero_grad", "train", "state_dict", "repr", "parameters"))
        ops.append((op, pick(draw, DTYPE_ARGS)) if op == "to" else (op, coin(draw)) if op == "train" else (op,))
    return {"kind": kind, "ctor": ctor, "ops": ops}


def b_rnn_cell_base(draw):
    cell = pick(draw, CELLS + ("LSTM", "Gru"))
    I, H, B = pos(draw), pos(draw), dim(draw)
    dtype = pick(draw, DTYPE_ARGS)
    dt = np.dtype(dtype).name
    batched = coin(draw)
    xs, hs = ((B, I), (B, H)) if batched else ((I,), (H,))
    h = maybe(draw, lambda: arr(draw, dt, hs))
    hx = (h, arr(draw, dt, hs)) if (cell.lower() == "lstm" and h is not None) else h
    return {"ctor": {"cell": cell, "input_size": I, "hidden_size": H, "bias": coin(draw), "dtype": dtype, "seed": 1,
                     "threads": threads_value(draw)},
            "xs": [arr(draw, dt, xs) for _ in range(rint(draw, 1, 4))], "hx": hx, "grad": "ones", "train": coin(draw),
            "max_history": maybe(draw, lambda: rint(draw, 1, 3)), "reset": rint(draw, 0, 3) == 0}


def _cutoffs(draw, V):
    """Increasing cutoffs in [1, V-1] (maybe none: the head is the whole vocabulary)."""
    return sorted(set(rint(draw, 1, V - 1) for _ in range(rint(draw, 0, min(3, V - 1)))))


def b_adaptive_softmax(draw):
    V, I = rint(draw, 2, 12), pick(draw, (4, 5, 8, 16, 17))
    dtype = pick(draw, DTYPE_ARGS)
    dt = np.dtype(dtype).name
    cut = _cutoffs(draw, V)
    div = pick(draw, (1.0, 2.0, 4.0))
    while cut and I // div ** len(cut) < 1:  # every cluster needs a projection of >= 1 unit
        cut = cut[:-1]
    lead = (dim(draw),) if rint(draw, 0, 3) else ()
    ops = [(pick(draw, ("log_prob", "predict")), arr(draw, dt, (dim(draw), I))) for _ in range(rint(draw, 0, 2))]
    return {"ctor": {"in_features": I, "n_classes": V, "cutoffs": cut, "div_value": div, "head_bias": coin(draw),
                     "dtype": dtype, "seed": 0, "threads": threads_value(draw)},
            "input": arr(draw, dt, lead + (I,)), "target": ids(draw, lead, V), "train": coin(draw),
            "fused": rint(draw, 0, 3) > 0, "grad_loss": pick(draw, (1.0, 0.5)),
            "grad_output": maybe(draw, lambda: arr(draw, dt, lead)), "ops": ops}


def b_core_adaptive_softmax(draw):
    V, I, N, dt = rint(draw, 2, 12), pos(draw), dim(draw), floats(draw)
    cutoffs = _cutoffs(draw, V) + [V]
    C = len(cutoffs) - 1
    hs = [pos(draw) for _ in range(C)]
    out = {"x": arr(draw, dt, (N, I)), "targets": ids(draw, (N,), V),
           "head_w": arr(draw, dt, (cutoffs[0] + C, I)), "head_b": maybe(draw, lambda: arr(draw, dt, (cutoffs[0] + C,))),
           "proj": [arr(draw, dt, (h, I)) for h in hs],
           "out": [arr(draw, dt, (cutoffs[i + 1] - cutoffs[i], h)) for i, h in enumerate(hs)],
           "cutoffs": cutoffs, "threads": threads_value(draw, False)}
    if coin(draw):
        out.update(row_weights=arr(draw, dt, (N,), fill="ones"),
                   dhead_w=arr(draw, dt, (cutoffs[0] + C, I), fill="zeros"),
                   dhead_b=None if out["head_b"] is None else arr(draw, dt, (cutoffs[0] + C,), fill="zeros"),
                   dproj=[arr(draw, dt, (h, I), fill="zeros") for h in hs],
                   dout=[arr(draw, dt, (cutoffs[i + 1] - cutoffs[i], h), fill="zeros") for i, h in enumerate(hs)])
    return out


def b_fixed_window_lm(draw):
    V, K = pos(draw), rint(draw, 1, 5)
    dtype = pick(draw, DTYPE_ARGS)
    T, B = dim(draw), dim(draw)
    return {"ctor": {"vocab_size": V, "embedding_dim": pos(draw), "hidden_size": pos(draw), "context": K,
                     "direct": coin(draw), "dropout": pick(draw, (0.0, 0.3)), "dtype": dtype, "seed": 0,
                     "threads": threads_value(draw)},
            "tokens": ids(draw, (T, B), V), "targets": ids(draw, (T, B), V),
            "state": maybe(draw, lambda: arr(draw, "int64", (K, B), 0, V + 1, fill="range")),
            "mask": maybe(draw, lambda: arr(draw, "bool", (T, B))),
            "loss_kwargs": {"reduction": pick(draw, ("mean", "sum"))}, "train": coin(draw),
            "weights": pick(draw, (None, None, "zero", "big")), "windows": rint(draw, 1, 2)}


def b_evaluate(draw):
    if coin(draw):
        kind, ctor = "LanguageModel", _sampling_ctor(draw)
    else:
        kind = "FixedWindowLM"
        ctor = {"vocab_size": pos(draw), "embedding_dim": pos(draw), "hidden_size": pos(draw),
                "context": rint(draw, 1, 4), "seed": 0, "dtype": pick(draw, DTYPE_ARGS)}
    V = ctor["vocab_size"]
    return {"kind": kind, "ctor": ctor, "ids": ids(draw, (rint(draw, 2, 60),), V), "batch_size": pos(draw),
            "seq_len": pos(draw), "bits_per_char": coin(draw), "threads": threads_value(draw),
            "weights": pick(draw, (None, None, "zero", "nan"))}


WORDS = st.sampled_from(("a", "b", "c", "the", "cat", "<unk>", "d\u00e9", "\u4e2d"))


def _sentence(draw):
    return [draw(WORDS) for _ in range(rint(draw, 0, 5))]


def b_ngram(draw):
    sentences = [_sentence(draw) for _ in range(rint(draw, 1, 8))]
    form = rint(draw, 0, 2)
    if form == 0:  # one str, a sentence per line
        corpus = "".join(" ".join(s) + "\n" for s in sentences)
    elif form == 1:  # a list of sentences, each a list of words
        corpus = sentences
    else:  # a list of str
        corpus = [" ".join(s) for s in sentences]
    order = rint(draw, 1, 4)
    ctor = {"order": order, "modified": coin(draw),
            "discount_fallback": pick(draw, (True, True, False, (0.5, 1.0, 1.5)))}
    queries = []
    for _ in range(rint(draw, 0, 4)):
        op = pick(draw, ("logprob", "distribution", "score", "evaluate", "perplexity", "token_logprobs",
                         "sentence_logprobs"))
        if op == "logprob":
            queries.append((op, _sentence(draw)[:order], pick(draw, ("a", "cat", "</s>", "zzz", 0, 2))))
        elif op == "distribution":
            queries.append((op, _sentence(draw)[:order]))
        elif op == "score":
            queries.append((op, " ".join(_sentence(draw))))
        else:
            queries.append((op, corpus))
    return {"ctor": ctor, "corpus": corpus, "ops": queries,
            "arpa": None if rint(draw, 0, 2) else pick(draw, (("truncate", rint(draw, 0, 400)),
                                                            ("flip", rint(draw, 0, 10**6), rint(draw, 1, 255))))}


def b_load_arpa_bytes(draw):
    k = rint(draw, 0, 2)
    if k == 0:
        return {"raw": draw(st.binary(max_size=80))}
    head = "\\data\\\nngram 1=" + str(pick(draw, (0, 1, 3, 2**63, -1))) + "\n"
    body = "\n\\1-grams:\n-1.0\t<unk>\n0\t<s>\t-0.5\n-0.5\t</s>\n"
    tail = pick(draw, ("\n\\end\\\n", "", "\\end\\"))
    text = head + (body if k == 1 else draw(st.text(max_size=40))) + tail
    return {"raw": text.encode("utf-8")}


def b_movie_reviews(draw):
    return {"threshold": pick(draw, (0.5, 1.0, 3.9)), "valid_fraction": pick(draw, (0.1, 0.3)),
            "test_fraction": pick(draw, (0.1, 0.2)), "seed": rint(draw, 0, 3)}


# -- public: rnncore.optim ----------------------------------------------------------------------------

def _optimizer_ctor(draw, name):
    if name == "SGD":
        return {"lr": pick(draw, (0.1, 1.0)), "momentum": pick(draw, (0, 0.9)), "dampening": 0,
                "weight_decay": pick(draw, (0, 0.01)), "nesterov": False}
    if name in ("Adam", "AdamW"):
        return {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
                "weight_decay": pick(draw, (0, 0.01)) if name == "Adam" else 1e-2, "amsgrad": coin(draw)}
    if name == "RMSprop":
        return {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0, "momentum": pick(draw, (0, 0.9)),
                "centered": coin(draw)}
    return {"lr": 1e-2, "lr_decay": 0, "weight_decay": 0, "initial_accumulator_value": 0, "eps": 1e-10}


OPTIMIZERS = ("Adagrad", "Adam", "AdamW", "RMSprop", "SGD")


def b_optimizer(draw):
    name = pick(draw, OPTIMIZERS)
    ctor = _optimizer_ctor(draw, name)
    ctor["threads"] = threads_value(draw)
    shapes = [shape(draw, 2) for _ in range(rint(draw, 1, 3))]
    dt = floats(draw)
    return {"name": name, "ctor": ctor, "params": [arr(draw, dt, s) for s in shapes],
            "grads": [arr(draw, dt, s) for s in shapes], "steps": rint(draw, 1, 3), "reload": coin(draw)}


def b_optimizer_load_state(draw):
    name = pick(draw, OPTIMIZERS)
    ctor = _optimizer_ctor(draw, name)
    shp = shape(draw, 2, lo=1) or (1,)
    state = {"state": {0: {"step": rint(draw, 0, 3), "exp_avg": arr(draw, "float32", shp),
                           "exp_avg_sq": arr(draw, "float32", shp, fill="zeros"),
                           "momentum_buffer": arr(draw, "float32", shp), "square_avg": arr(draw, "float32", shp),
                           "sum": arr(draw, "float32", shp, fill="zeros")}},
             "param_groups": [dict(ctor, params=[0])]}
    return {"name": name, "ctor": ctor, "params": [arr(draw, "float32", shp)], "state": state}


SCHEDULERS = ("CosineAnnealingLR", "ExponentialLR", "LambdaLR", "MultiStepLR", "MultiplicativeLR",
              "ReduceLROnPlateau", "StepLR", "ZarembaLR")


def b_scheduler(draw):
    name = pick(draw, SCHEDULERS)
    if name == "StepLR":
        ctor = {"step_size": rint(draw, 1, 3), "gamma": 0.5}
    elif name == "MultiStepLR":
        ctor = {"milestones": [rint(draw, 1, 5) for _ in range(rint(draw, 0, 3))], "gamma": 0.5}
    elif name == "ExponentialLR":
        ctor = {"gamma": 0.9}
    elif name == "CosineAnnealingLR":
        ctor = {"T_max": rint(draw, 1, 5), "eta_min": 0.0}
    elif name == "ZarembaLR":
        ctor = {"constant_epochs": rint(draw, 0, 3), "factor": 0.5}
    elif name == "ReduceLROnPlateau":
        ctor = {"mode": pick(draw, ("min", "max")), "factor": 0.5, "patience": 1}
    else:
        ctor = {"lr_lambda": pick(draw, ("half", "one", "nan", "huge"))}
    return {"name": name, "ctor": ctor, "steps": rint(draw, 0, 4), "metrics": [1.0, 0.5, 2.0],
            "opt": pick(draw, ("SGD", "Adam"))}


def b_clip(draw, which):
    grads = [arr(draw, floats(draw), shape(draw, 2)) for _ in range(rint(draw, 0, 3))]
    if which == "norm":
        return {"grads": grads, "max_norm": pick(draw, (1.0, 0.1, 10.0)),
                "norm_type": pick(draw, (2.0, 1.0, math.inf, "inf", 3)), "error_if_nonfinite": coin(draw),
                "threads": threads_value(draw)}
    return {"grads": grads, "clip_value": pick(draw, (1.0, 0.0, 0.5)), "threads": threads_value(draw)}


# -- public: rnncore.sampling -------------------------------------------------------------------------

def _sampling_ctor(draw):
    ctor = _maybe_proj(draw, _lm_ctor(draw))
    ctor.pop("batch_first", None)
    ctor["dropout"] = 0.0
    return ctor


def b_generate(draw, which):
    ctor = _sampling_ctor(draw)
    V = ctor["vocab_size"]
    P = pos(draw)
    streams = rint(draw, 0, 2) if which == "generate" else 0
    out = {"ctor": ctor, "prime": ids(draw, (streams, P) if streams else (P,), V), "weights": pick(draw, WEIGHTS)}
    if which == "beam_search":
        width = rint(draw, 1, 4)
        out.update(beam_width=width, max_len=rint(draw, 1, 6), alpha=pick(draw, (0.0, 0.7)),
                   n_best=rint(draw, 1, width),
                   stop_tokens=_stop_tokens(draw, V), threads=threads_value(draw))
        return out
    out.update(max_new_tokens=rint(draw, 0, 8), temperature=pick(draw, (1.0, 0.0, 0.5)),
               top_k=maybe(draw, lambda: rint(draw, 1, V + 1)), top_p=pick(draw, (None, 0.9, 1.0, 0.01)),
               seed=maybe(draw, lambda: rint(draw, 0, 2**64)), repetition_penalty=pick(draw, (1.0, 1.3)),
               stop_tokens=_stop_tokens(draw, V), threads=threads_value(draw))
    if which == "stream":
        out["chunk"] = rint(draw, 1, 3)
        out["take"] = rint(draw, 0, 8)
    return out


def b_quantized_lm(draw):
    ctor = _sampling_ctor(draw)
    V = ctor["vocab_size"]
    return {"ctor": ctor, "precision": pick(draw, ("int8", "bf16")), "tokens": ids(draw, (pos(draw), pos(draw)), V),
            "prime": ids(draw, (pos(draw),), V), "max_new_tokens": rint(draw, 0, 6), "weights": pick(draw, WEIGHTS),
            "threads": threads_value(draw)}


def b_quantize_rows(draw):
    return {"w": arr(draw, "float32", (dim(draw, 0), dim(draw, 0)))}


def b_quantize_u8(draw):
    return {"x": arr(draw, "float32", (dim(draw, 0),))}


def b_int8_gemv_acc(draw):
    N, K = pos(draw), pos(draw)
    return {"q": arr(draw, "int8", (N, K), -127, 128), "xq": arr(draw, "uint8", (K,), 0, 256)}


def b_int8_gemv(draw):
    N, K = pos(draw), pos(draw)
    return {"q": arr(draw, "int8", (N, K), -127, 128), "scale": arr(draw, "float32", (N,), 0.01, 1.0, fill="uniform"),
            "x": arr(draw, "float32", (K,))}


def b_to_bf16(draw):
    return {"x": arr(draw, "float32", shape(draw, 3))}


def b_round_bf16(draw):
    shp = shape(draw, 3)
    return {"x": arr(draw, "float32", shp), "out": maybe(draw, lambda: arr(draw, "float32", shp, fill="zeros"))}


def b_gemm_bf16(draw):
    M, N, K = dim(draw), dim(draw), dim(draw)
    ta, tb = coin(draw), coin(draw)
    beta = pick(draw, (0.0, 0.0, 1.0, 0.5))
    return {"a": arr(draw, "float32", (K, M) if ta else (M, K)), "b": arr(draw, "float32", (N, K) if tb else (K, N)),
            "trans_a": ta, "trans_b": tb, "c": maybe(draw, lambda: arr(draw, "float32", (M, N))), "beta": beta,
            "threads": threads_value(draw, False), "per_step": coin(draw)}


def b_bf16_gemv(draw):
    N, K = pos(draw), pos(draw)
    return {"w": arr(draw, "uint16", (N, K), 0, 65536), "x": arr(draw, "float32", (K,))}


def b_decoder(draw):
    ctor = _sampling_ctor(draw)
    V, B = ctor["vocab_size"], pos(draw)
    ops = []
    for _ in range(rint(draw, 0, 4)):
        op = pick(draw, ("prime", "seed", "sample", "step_logits", "get_state", "beam_search"))
        if op == "prime":
            ops.append((op, ids(draw, (B, pos(draw)), V)))
        elif op == "seed":
            ops.append((op, rint(draw, 0, 2**64 - 1)))
        elif op == "sample":
            ops.append((op, rint(draw, 0, 5)))
        elif op == "beam_search":
            ops.append((op, rint(draw, 1, 4)))
        else:
            ops.append((op,))
    return {"ctor": ctor, "batch": B, "ops": ops, "weights": pick(draw, (None, None, "nan")),
            "threads": threads_value(draw)}


# -- public: rnncore.io -------------------------------------------------------------------------------

HEADERS = ('{}', '[]', '{"__metadata__": []}', '{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', 'null',
           '{"a": 1}', '{"x": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}',
           '{"x": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 4]}}')
META_KEYS = ("config", "kind", "format_version", "model_tensors", "optimizer", "checksums", "extra")
META_VALUES = ('{"hidden_size": 8000}', "[]", "{}", "LSTM", "Linear", "2", "not json", '"x"')


def _file_mutation(draw):
    k = rint(draw, 0, 4)
    if k == 0:
        return ("truncate", rint(draw, 0, 4000))
    if k == 1:
        return ("flip", rint(draw, 0, 10**6), rint(draw, 1, 255))
    if k == 2:
        return ("length", pick(draw, (0, 1, 2**63, 2**64 - 1, 10**6)))
    if k == 3:
        return ("header", pick(draw, HEADERS))
    return ("metadata", pick(draw, META_KEYS), pick(draw, META_VALUES))


def b_save_load(draw):
    kind, ctor = _small_model(draw)
    return {"kind": kind, "ctor": ctor, "with_optimizer": coin(draw),
            "extra": pick(draw, (None, {"epoch": 3}, {"nested": [1, [2, {"a": None}]]})),
            "arrays": maybe(draw, lambda: {"state": arr(draw, "float32", (2, 3))}), "config": None,
            "mutate": _file_mutation(draw) if rint(draw, 0, 2) == 0 else None, "into_model": coin(draw),
            "build": coin(draw)}


def b_load_bytes(draw):
    if coin(draw):
        return {"raw": draw(st.binary(max_size=64))}
    return {"raw": rint(draw, 0, 2**64 - 1).to_bytes(8, "little") + draw(st.binary(max_size=64))}


STATE_NAMES = ("weight", "bias", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "encoder.weight", "bogus")


def b_load_state_dict(draw):
    kind, ctor = _small_model(draw)
    entries = {}
    for _ in range(rint(draw, 0, 2)):
        entries[pick(draw, STATE_NAMES)] = pick(draw, (A("float32", (2, 3)), A("float64", (4,)), A("complex64", (2, 3)),
                                                       A("object", (2, 3)), Junk("list")))
    return {"kind": kind, "ctor": ctor, "entries": entries, "strict": coin(draw),
            "base": pick(draw, ("full", "full", "empty"))}


def b_from_torch(draw):
    state = {pick(draw, ("weight_ih_l0", "rnn.weight_hh_l0", "x", "")): A("float32", (2, 2))
             for _ in range(rint(draw, 0, 3))}
    return {"state": state, "prefix": pick(draw, ("", "rnn.", "model."))}


# -- public: rnncore.data -----------------------------------------------------------------------------

TEXT = st.text(alphabet="abc de\nf\u00e9\u4e2d\t", max_size=40)


def b_char_tokenizer(draw):
    return {"options": {"min_count": rint(draw, 1, 2), "max_size": maybe(draw, lambda: rint(draw, 1, 6)),
                        "unk": coin(draw), "pad": coin(draw)},
            "fit_text": draw(TEXT), "text": maybe(draw, lambda: draw(TEXT)),
            "ids": maybe(draw, lambda: arr(draw, "int64", (dim(draw),), 0, 4, fill="range"))}


def b_word_tokenizer(draw):
    return {"options": {"min_count": rint(draw, 1, 2), "max_size": maybe(draw, lambda: rint(draw, 1, 6)),
                        "unk": True, "eos": coin(draw), "pad": coin(draw), "lower": coin(draw), "punct": coin(draw)},
            "fit_text": draw(TEXT), "text": maybe(draw, lambda: draw(TEXT)),
            "ids": maybe(draw, lambda: arr(draw, "int64", (dim(draw),), 0, 3, fill="range"))}


SYMBOL = st.text(max_size=3)


def b_vocabulary(draw):
    symbols = list(dict.fromkeys(draw(SYMBOL) for _ in range(rint(draw, 0, 5))))
    return {"symbols": symbols,
            "kwargs": {"unk_token": pick(draw, (None, "<unk>")), "eos_token": pick(draw, (None, "<eos>")),
                       "pad_token": pick(draw, (None, "<pad>")), "bos_token": pick(draw, (None, "<s>"))},
            "lookups": [draw(SYMBOL) for _ in range(rint(draw, 0, 3))]}


def b_tokenizer_from_dict(draw):
    kind = pick(draw, ("char", "word"))
    letters = "abc<>"
    symbols = list(dict.fromkeys("".join(pick(draw, letters) for _ in range(1 if kind == "char" else rint(draw, 1, 3)))
                                 for _ in range(rint(draw, 0, 4))))
    unk = pick(draw, (None, "<unk>"))
    options = {"min_count": 1, "max_size": None, "unk": unk is not None, "pad": False}
    if kind == "word":
        options.update(eos=False, lower=False)
    d = {"type": kind, "format": 1, "options": options,
         "vocab": {"format": 1, "symbols": ([unk] if unk else []) + [s for s in symbols if s != unk],
                   "unk_token": unk, "eos_token": None, "pad_token": None}}
    return {"d": d}


def b_stream_batcher(draw):
    return {"ids": arr(draw, "int64", (rint(draw, 0, 40),), 0, 9, fill="range"), "batch_size": pos(draw),
            "seq_len": pos(draw), "drop_last": coin(draw), "state": None, "take": rint(draw, 0, 3)}


def b_lm_batches(draw):
    return {"ids": arr(draw, "int64", (rint(draw, 0, 40),), 0, 9, fill="range"), "batch_size": pos(draw),
            "seq_len": pos(draw), "start": rint(draw, 0, 2), "drop_last": coin(draw)}


def _sequences(draw, feat=()):
    dt = pick(draw, ("int64", "float32"))
    return [arr(draw, dt, (dim(draw),) + feat, 0, 9, fill="range" if dt == "int64" else None)
            for _ in range(rint(draw, 1, 4))]


def b_pad_sequences(draw):
    feat = (pos(draw),) if coin(draw) else ()
    return {"seqs": _sequences(draw, feat), "pad_value": pick(draw, (0, -1, 2.5)), "time_major": coin(draw),
            "dtype": pick(draw, (None, "float32", "int64"))}


def b_bucket_iterator(draw):
    seqs = _sequences(draw)
    return {"seqs": seqs, "labels": maybe(draw, lambda: arr(draw, "int64", (len(seqs),), 0, 3, fill="range")),
            "batch_size": pos(draw),
            "kwargs": {"shuffle": coin(draw), "seed": rint(draw, 0, 9),
                       "num_buckets": maybe(draw, lambda: rint(draw, 1, 3)), "drop_last": coin(draw)},
            "take": rint(draw, 0, 3)}


def b_read_text(draw):
    k = rint(draw, 0, 3)
    raw = draw(st.binary(max_size=40)) if k == 0 else draw(TEXT).encode("utf-16" if k == 3 else "utf-8")
    if k == 2:
        raw = b"\xef\xbb\xbf" + raw
    return {"raw": raw, "as_dir": coin(draw), "name": pick(draw, ("a.txt", "b.md", "c.bin"))}


# -- attention (issue 12) ----------------------------------------------------------------------------

ATTN_KINDS = ("dot", "general", "additive", "mlp")


def _attn_sizes(draw, kind):
    Hq = pos(draw)
    return Hq, (Hq if kind == "dot" else pos(draw)), pos(draw), pos(draw)  # Hq, Hm, A, Ho


def _attn_weights(draw, dt, kind, Hq, Hm, A, Ho):
    add = kind in ("additive", "mlp")
    return (kind, arr(draw, dt, (Hm, Hq)) if kind == "general" else None,
            arr(draw, dt, (A, Hq)) if add else None, maybe(draw, lambda: arr(draw, dt, (A,))) if add else None,
            arr(draw, dt, (A, Hm)) if add else None, arr(draw, dt, pick(draw, ((1, A), (A,)))) if add else None,
            arr(draw, dt, (Ho, Hm + Hq)), maybe(draw, lambda: arr(draw, dt, (Ho,))))


def b_attention_keys(draw):
    kind, dt = pick(draw, ATTN_KINDS), floats(draw)
    Hq, Hm, A, Ho = _attn_sizes(draw, kind)
    return {"memory": arr(draw, dt, (pos(draw), dim(draw), Hm)), "weights": _attn_weights(draw, dt, kind, Hq, Hm, A, Ho),
            "threads": threads_value(draw, False)}


def _attention_forward_args(draw):
    kind, dt = pick(draw, ATTN_KINDS), floats(draw)
    Hq, Hm, A, Ho = _attn_sizes(draw, kind)
    Tq, B, S = dim(draw), dim(draw), pos(draw)
    fwd = {"query": arr(draw, dt, (Tq, B, Hq)), "memory": arr(draw, dt, (S, B, Hm)),
           "weights": _attn_weights(draw, dt, kind, Hq, Hm, A, Ho),
           "memory_lengths": maybe(draw, lambda: arr(draw, "int64", (B,), 1, S + 1, fill="range")),
           "threads": threads_value(draw, False)}
    return fwd, (dt, kind, Tq, B, S, Hq, Hm, A, Ho)


def b_attention_forward(draw):
    return _attention_forward_args(draw)[0]


def b_core_attention(draw):
    fwd, (dt, kind, Tq, B, S, Hq, Hm, A, Ho) = _attention_forward_args(draw)
    bwd = None
    if coin(draw):
        add = kind in ("additive", "mlp")
        w = fwd["weights"]

        def g(i, shp):
            return arr(draw, dt, shp, fill="zeros") if w[i + 1] is not None and coin(draw) else None
        v_shape = w[5].shape if add else (A,)
        bwd = {"grad_attn_h": arr(draw, dt, (Tq, B, Ho)),
               "grad_alpha": maybe(draw, lambda: arr(draw, dt, (Tq, B, S))),
               "grads": maybe(draw, lambda: (g(0, (Hm, Hq)), g(1, (A, Hq)), g(2, (A,)), g(3, (A, Hm)), g(4, v_shape),
                                             g(5, (Ho, Hm + Hq)), g(6, (Ho,)))),
               "need_dquery": coin(draw), "need_dmemory": coin(draw), "threads": threads_value(draw, False)}
    return {"forward": fwd, "backward": bwd, "with_keys": coin(draw)}


def b_attention(draw):
    kind = pick(draw, ATTN_KINDS)
    Hq = pos(draw)
    Hm = Hq if kind == "dot" else pos(draw)
    dtype = pick(draw, DTYPE_ARGS)
    dt = np.dtype(dtype).name
    B, S = dim(draw), pos(draw)
    lead = pick(draw, ((B,), (dim(draw), B)))
    ctor = {"query_size": Hq, "memory_size": pick(draw, (Hm, None)) if Hm == Hq else Hm, "attn_type": kind,
            "output_size": maybe(draw, lambda: pos(draw)), "output_bias": pick(draw, (None, True, False)),
            "dtype": dtype, "seed": 0, "threads": threads_value(draw)}
    if kind in ("additive", "mlp"):
        ctor["attention_size"] = maybe(draw, lambda: pos(draw))
    return {"ctor": ctor, "query": arr(draw, dt, lead + (Hq,)), "memory": arr(draw, dt, (S, B, Hm)),
            "memory_lengths": maybe(draw, lambda: arr(draw, "int64", (B,), 1, S + 1, fill="range")), "grad": "ones",
            "grad_alpha": maybe(draw, lambda: arr(draw, dt, lead + (S,)))}


# -- public: seq2seq data and metrics -----------------------------------------------------------------

PAIR_WORDS = ("a", "b", "cc", "\u00e9", "<s>", "</s>", "<pad>", "x\ty", "", "end.", "\u00bfqui\u00e9n?")


def _sentence_str(draw, lo=0):
    return " ".join(pick(draw, PAIR_WORDS) for _ in range(rint(draw, lo, 5)))


def _pairs(draw, lo=1):
    return [(_sentence_str(draw, 1) or "a", _sentence_str(draw)) for _ in range(rint(draw, lo, 6))]


def b_pair_tokenizer(draw):
    return {"sentences": [_sentence_str(draw) for _ in range(rint(draw, 0, 4))],
            "kwargs": {"min_freq": rint(draw, 1, 2), "max_size": maybe(draw, lambda: rint(draw, 4, 8)),
                       "lower": coin(draw)},
            "text": _sentence_str(draw)}


def b_pair_dataset(draw):
    pairs = _pairs(draw)
    return {"pairs": pairs, "kwargs": {"min_freq": rint(draw, 1, 2), "max_size": maybe(draw, lambda: rint(draw, 4, 8))},
            "indices": arr(draw, "int64", (rint(draw, 1, 4),), 0, len(pairs), fill="range"),
            "decode": maybe(draw, lambda: arr(draw, "int64", (dim(draw),), -100, 9, fill="range"))}


def b_pair_batcher(draw):
    return {"pairs": _pairs(draw), "batch_size": pos(draw),
            "kwargs": {"shuffle": coin(draw), "seed": rint(draw, 0, 9), "pool_size": pick(draw, (None, 1, 2, 100)),
                       "max_src_len": maybe(draw, lambda: rint(draw, 1, 4)),
                       "max_tgt_len": maybe(draw, lambda: rint(draw, 0, 4)), "drop_last": coin(draw)},
            "take": rint(draw, 0, 3)}


def b_split_pairs(draw):
    return {"pairs": _pairs(draw), "valid_fraction": pick(draw, (0.0, 0.1, 0.3)),
            "test_fraction": pick(draw, (0.0, 0.2, 0.5)), "seed": rint(draw, 0, 3)}


OSIS = st.text(alphabet="ab <>/\"=note&amp;\u00b6\n\t", max_size=40)


def b_osis_text(draw):
    return {"markup": pick(draw, ("<note>x</note>y", "\u00b6 a", "<w a='1'>b</w>&lt;")) if coin(draw) else draw(OSIS)}


def _tsv_bytes(draw):
    k = rint(draw, 0, 2)
    if k == 0:
        return draw(st.binary(max_size=40))
    rows = [_sentence_str(draw) + pick(draw, ("\t", "\t", "", "\t\t")) + _sentence_str(draw)
            for _ in range(rint(draw, 0, 4))]
    return (pick(draw, ("\n", "\r\n")).join(rows) + pick(draw, ("", "\n"))).encode("utf-8")


def b_parallel_files(draw):
    n = rint(draw, 0, 4)
    lines = lambda: "\n".join(_sentence_str(draw) for _ in range(n)).encode("utf-8")  # noqa: E731
    return {"src_raw": lines(), "tgt_raw": lines() if coin(draw) else _tsv_bytes(draw), "skip_empty": coin(draw)}


def b_read_tsv(draw):
    return {"raw": _tsv_bytes(draw), "skip_empty": coin(draw)}


def b_bible_pairs(draw):
    return {"src": pick(draw, ("en", "es")), "tgt": pick(draw, ("es", "en")),
            "max_words": pick(draw, (None, 25, 3)), "split_seed": rint(draw, 0, 2),
            "valid_fraction": pick(draw, (0.05, 0.0, 0.3)), "test_fraction": pick(draw, (0.05, 0.2))}


def b_bleu(draw):
    n = rint(draw, 1, 4)
    hyps = [_sentence_str(draw) for _ in range(n)]
    refs = [_sentence_str(draw) for _ in range(n)] if coin(draw) else \
        [[_sentence_str(draw) for _ in range(2)] for _ in range(n)]
    return {"hypotheses": hyps, "references": refs,
            "kwargs": {"tokenize": pick(draw, ("13a", "none", "intl", "char")), "lowercase": coin(draw)}}


def b_token_accuracy(draw):
    shp = shape(draw, 2, 1)
    V = pos(draw)
    targets = arr(draw, "int64", shp, -1, V, fill="range")
    preds = arr(draw, "int64", shp, 0, V, fill="range") if coin(draw) else arr(draw, floats(draw), shp + (V,))
    return {"predictions": preds, "targets": targets, "ignore_index": pick(draw, (-100, -1, 0))}


def b_perplexity(draw):
    return {"nll": pick(draw, (0.0, 1.5, 100.0, 1e6)), "num_tokens": pick(draw, (None, 1, 7))}


# -- seq2seq decoding (issue 12: gen) -----------------------------------------------------------------

def _s2s_model(draw, dt):
    """Arrays of a small decoder: (cell, V, E, H, L, feed, kind, Hm, weights tuple or None, layers, w_out, b_out)."""
    cell = pick(draw, CELLS + ("GRU",))
    G = GATES[cell.lower()]
    V, E, H, L = pos(draw), dim(draw), pos(draw), rint(draw, 1, 2)
    kind = pick(draw, (None,) + ATTN_KINDS)
    Hm, A, Ho = (H, pos(draw), pos(draw)) if kind == "dot" else (pos(draw), pos(draw), pos(draw))
    weights = None if kind is None else _attn_weights(draw, dt, kind, H, Hm, A, Ho)
    feed = kind is not None and coin(draw)
    F, O = (Ho if feed else 0), (Ho if kind else H)

    def opt(shp):
        return maybe(draw, lambda: arr(draw, dt, shp))

    layers = [(arr(draw, dt, (G * H, E + F if l == 0 else H)), arr(draw, dt, (G * H, H)), opt((G * H,)),
               opt((G * H,))) for l in range(L)]
    return cell, V, E, H, L, feed, kind, Hm, weights, layers, arr(draw, dt, (V, O)), opt((V,))


def _s2s_sources(draw, dt, kind, Hm, H, L, cell, attention_needed=True):
    B, S = pos(draw), pos(draw)
    memory = arr(draw, dt, (S, B, Hm if kind else pos(draw))) if (kind or coin(draw)) else None
    lengths = maybe(draw, lambda: arr(draw, "int64", (B,), 1, S + 1, fill="range")) if memory is not None else None
    h0 = arr(draw, dt, (L, B, H)) if memory is None or coin(draw) else None
    c0 = maybe(draw, lambda: arr(draw, dt, (L, B, H))) if cell.lower() == "lstm" else None
    return B, memory, lengths, h0, c0


def _s2s_options(draw, V, B):
    method = pick(draw, ("greedy", "beam", "sample"))
    width = rint(draw, 1, 4)
    return {"bos": rint(draw, 0, V - 1), "eos": rint(draw, 0, V - 1),
            "max_len": pick(draw, (rint(draw, 1, 5), arr(draw, "int64", (B,), 1, 6, fill="range"))),
            "method": method, "beam_width": width, "n_best": 1 if method == "greedy" else rint(draw, 1, width),
            "length_penalty": pick(draw, (0.0, 0.6)), "temperature": pick(draw, (1.0, 0.0, 0.7)),
            "top_k": rint(draw, 0, 3), "top_p": pick(draw, (1.0, 0.9)),
            "seed": maybe(draw, lambda: rint(draw, 0, 2**64 - 1)), "return_attention": coin(draw)}


def b_core_seq2seq_decoder(draw):
    dt = floats(draw)
    cell, V, E, H, L, feed, kind, Hm, weights, layers, w_out, b_out = _s2s_model(draw, dt)
    ctor = {"cell": cell, "embedding": arr(draw, dt, (V, E)), "layers": layers, "attention": weights,
            "input_feed": feed, "w_out": w_out, "b_out": b_out, "threads": threads_value(draw, False)}
    ops = []
    for _ in range(rint(draw, 0, 3)):
        B, memory, lengths, h0, c0 = _s2s_sources(draw, dt, kind, Hm, H, L, cell)
        src = {"memory": memory, "memory_lengths": lengths, "h0": h0, "c0": c0}
        if coin(draw):
            ops.append(("forced", dict(src, tokens=ids(draw, (dim(draw), B), V), return_attention=coin(draw))))
        else:
            ops.append(("decode", dict(src, **_s2s_options(draw, V, B))))
    return {"ctor": ctor, "ops": ops}


def b_seq2seq_decode(draw):
    dtype = pick(draw, DTYPE_ARGS)
    dt = np.dtype(dtype).name
    cell, V, E, H, L, feed, kind, Hm, weights, layers, w_out, b_out = _s2s_model(draw, dt)
    attention = None
    if kind is not None:
        Ho = w_out.shape[1]
        A = weights[2].shape[0] if weights[2] is not None else None
        attention = {"query_size": H, "memory_size": Hm, "attn_type": kind, "output_size": Ho,
                     "attention_size": A, "output_bias": weights[7] is not None, "dtype": dtype, "seed": 0}
    parts = {"cell": cell, "num_layers": L, "hidden_size": H, "input_feed": feed, "embedding": arr(draw, dt, (V, E)),
             "w_ih": [l[0] for l in layers], "w_hh": [l[1] for l in layers], "b_ih": [l[2] for l in layers],
             "b_hh": [l[3] for l in layers], "out_w": w_out, "out_b": b_out}
    B, memory, lengths, h0, c0 = _s2s_sources(draw, dt, kind, Hm, H, L, cell)
    state = h0 if c0 is None else (h0, c0)
    out = {"parts": parts, "attention": attention, "memory": memory, "memory_lengths": lengths, "state": state,
           "threads": threads_value(draw)}
    out.update(_s2s_options(draw, V, B))
    return out


# -- threads and the trainer ----------------------------------------------------------------------------

WORKS = ("lstm", "linear", "layernorm", "embedding", "optim", "loss", "generate")


def b_with_threads(draw):
    # big work (enough for thousands of threads) now and then, unless that is known to crash
    return {"n": threads_edge(draw), "how": pick(draw, ("set", "ctor", "env")), "work": pick(draw, WORKS),
            "big": False if is_known("threads_huge") or not MANY_THREADS_OK else rint(draw, 0, 7) == 7}


def b_world_of_one(draw):
    return {"timeout": pick(draw, (None, 1, 2.5, 300)), "n": rint(draw, 0, 9), "loss": pick(draw, (0.0, 1.5, 1e6)),
            "count": rint(draw, 0, 9), "clock": pick(draw, (0.0, 3.25))}


def b_trainer(draw):
    V = rint(draw, 2, 9)
    ctor = {"vocab_size": V, "embedding_dim": 4, "hidden_size": 4, "cell": pick(draw, ("lstm", "gru")), "seed": 0}
    return {"model_ctor": ctor,
            "trainer_kwargs": {"batch_size": pos(draw), "seq_len": pos(draw), "clip_grad_norm": pick(draw, (None, 1.0)),
                               "checkpoints": coin(draw), "log_every": 1,
                               "grad_flow_every": pick(draw, (None, None, 1, 2))},
            "train_ids": arr(draw, "int64", (rint(draw, 0, 40),), 0, V, fill="range"),
            "valid_ids": maybe(draw, lambda: arr(draw, "int64", (rint(draw, 0, 20),), 0, V, fill="range")),
            "fit_kwargs": {"max_steps": rint(draw, 1, 3)}}


def b_task_fit(draw):
    kind = pick(draw, ("lm", "seq2seq", "classification"))
    V = rint(draw, 3, 9)
    if kind == "lm":
        task = {"batch_size": pos(draw), "seq_len": pos(draw), "eval_batch_size": maybe(draw, lambda: pos(draw)),
                "metric": pick(draw, ("loss", "ppl", "bpc"))}
        data = {"train": arr(draw, "int64", (rint(draw, 0, 40),), 0, V, fill="range"),
                "valid": arr(draw, "int64", (rint(draw, 2, 20),), 0, V, fill="range")}
    elif kind == "seq2seq":
        S, T, B = rint(draw, 1, 6), rint(draw, 1, 6), rint(draw, 1, 4)
        task = {"metric": pick(draw, ("loss", "ppl", "accuracy", "bleu")), "with_bleu": coin(draw),
                "ignore_index": pick(draw, (-100, 0))}
        data = {"src": arr(draw, "int64", (S, B), 0, V, fill="range"),
                "src_lengths": arr(draw, "int64", (B,), 1, S + 1, fill="range"),
                "tgt_in": arr(draw, "int64", (T, B), 0, V, fill="range"),
                "tgt_out": arr(draw, "int64", (T, B), 0, V, fill="range"), "batches": rint(draw, 1, 3)}
    else:
        N, L = rint(draw, 1, 8), rint(draw, 1, 6)
        task = {"batch_size": pos(draw), "seed": rint(draw, 0, 5), "shuffle": coin(draw),
                "eval_batch_size": pos(draw), "metric": pick(draw, ("loss", "accuracy"))}
        data = {"padded": arr(draw, "int64", (N, L), 0, V, fill="range"),
                "lengths": [rint(draw, 1, L) for _ in range(N)],
                "labels": arr(draw, "int64", (N,), 0, 2, fill="range")}
    return {"kind": kind, "V": V, "task_kwargs": task, **data,
            "trainer_kwargs": {"clip_grad_norm": pick(draw, (None, 1.0)), "checkpoints": coin(draw), "log_every": 1,
                               "eval_every": maybe(draw, lambda: rint(draw, 1, 2)),
                               "patience": maybe(draw, lambda: rint(draw, 1, 2))},
            "fit_kwargs": {"max_steps": rint(draw, 1, 3), "epochs": rint(draw, 1, 2)}}


# -- the registry -------------------------------------------------------------------------------------

def core(name, build, **kw):
    return call("rnncore._core." + name, build, public=False, **kw)


def scen(name, build, **kw):
    return call("fuzz.scenarios." + name, build, **kw)


def _info_calls():
    names = ("gemm_config", "gemm_kernel", "isa", "max_threads", "openmp_enabled", "supported_isas", "thread_limit",
             "vmath_kernel", "cells_kernel", "int8_kernel", "bf16_kernel")
    calls = [Call("rnncore._core." + n, public=False) for n in names]
    calls += [Call("rnncore._core." + n, (v,), public=False) for n in names for v in (1, None, "x")]
    return st.sampled_from(calls)


def _known_allow(key, name):
    """Exception names a broad target tolerates while `key` is known (the narrow test asserts them)."""
    return (name,) if is_known(key) else ()


def _p(fn, *args):
    """build(draw) = fn(draw, *args)."""
    return lambda draw: fn(draw, *args)


# -- the input-feeding attentional decoder (issue 12, helper feed) ---------------------------------

def _attention_tuple(draw, kind, dt, Hq, Hm, Ho, A):
    """_core's attention weights tuple (csrc/bindings/bind_attention.h) of a kind."""
    gen, add = kind == "general", kind == "additive"
    return (kind, arr(draw, dt, (Hm, Hq)) if gen else None, arr(draw, dt, (A, Hq)) if add else None,
            maybe(draw, lambda: arr(draw, dt, (A,))) if add else None, arr(draw, dt, (A, Hm)) if add else None,
            arr(draw, dt, (1, A)) if add else None, arr(draw, dt, (Ho, Hm + Hq)),
            maybe(draw, lambda: arr(draw, dt, (Ho,))))


def b_core_attn_decoder(draw):
    cell = pick(draw, CELLS + ("LSTM",))
    kind = pick(draw, ("dot", "general", "additive"))
    dt, G, is_lstm = floats(draw), GATES[cell.lower()], cell.lower() == "lstm"
    T, B, E, H, S, Ho, A, L = pos(draw), pos(draw), pos(draw), pos(draw), pos(draw), pos(draw), pos(draw), rint(draw, 1, 2)
    Hm = H if kind == "dot" else pos(draw)
    zeros = lambda shp: arr(draw, dt, shp, fill="zeros")

    def opt(shp):
        return maybe(draw, lambda: arr(draw, dt, shp))

    weights = _attention_tuple(draw, kind, dt, H, Hm, Ho, A)
    w_ih = [arr(draw, dt, (G * H, E + Ho if l == 0 else H)) for l in range(L)]
    w_hh = [arr(draw, dt, (G * H, H)) for _ in range(L)]
    fwd = {"cell": cell, "x": arr(draw, dt, (T, B, E)), "memory": arr(draw, dt, (S, B, Hm)),
           "memory_lengths": maybe(draw, lambda: arr(draw, "int64", (B,), 1, S + 1, fill="range")),
           "w_ih": w_ih, "w_hh": w_hh, "b_ih": maybe(draw, lambda: [opt((G * H,)) for _ in range(L)]),
           "b_hh": maybe(draw, lambda: [opt((G * H,)) for _ in range(L)]), "attention": weights,
           "h0": opt((L, B, H)), "c0": opt((L, B, H)) if is_lstm else None, "feed0": opt((B, Ho)),
           "masks": maybe(draw, lambda: arr(draw, dt, (L - 1, T, B, H))) if L > 1 else None,
           "threads": threads_value(draw, False), "workspace": pick(draw, (None, Junk("workspace")))}
    bwd = None
    if coin(draw):
        grads = tuple(None if w is None else zeros(w.shape) for w in weights[1:])
        bwd = {"grad_attn_h": opt((T, B, Ho)), "w_ih": w_ih, "w_hh": w_hh, "attention": weights,
               "dw_ih": [zeros(w.shape) for w in w_ih], "dw_hh": [zeros(w.shape) for w in w_hh],
               "db_ih": maybe(draw, lambda: [zeros((G * H,)) for _ in range(L)]),
               "db_hh": maybe(draw, lambda: [zeros((G * H,)) for _ in range(L)]),
               "attention_grads": maybe(draw, lambda: grads), "grad_h_n": opt((L, B, H)),
               "grad_c_n": opt((L, B, H)) if is_lstm else None, "grad_alpha": opt((T, B, S)),
               "threads": threads_value(draw, False)}
    return {"forward": fwd, "backward": bwd, "reuse": coin(draw)}


def b_input_feed_rnn(draw):
    cell = pick(draw, CELLS + ("LSTM", "Gru"))
    kind = pick(draw, ("dot", "general", "additive", "mlp"))
    dtype = pick(draw, DTYPE_ARGS)
    dt = np.dtype(dtype).name
    T, B, E, H, S, L = pos(draw), pos(draw), pos(draw), pos(draw), pos(draw), rint(draw, 1, 2)
    Hm = H if kind == "dot" else pos(draw)
    attn = {"query_size": H, "memory_size": Hm, "attn_type": kind, "output_size": maybe(draw, lambda: pos(draw)),
            "dtype": dtype, "seed": rint(draw, 0, 5)}
    Ho = attn["output_size"] or H
    ctor = {"cell": cell, "input_size": E, "hidden_size": H, "num_layers": L,
            "dropout": pick(draw, (0.0, 0.0, 0.3)) if L > 1 else 0.0, "bias": coin(draw), "dtype": dtype,
            "seed": rint(draw, 0, 5), "threads": threads_value(draw)}
    h = maybe(draw, lambda: arr(draw, dt, (L, B, H)))
    hx = (h, arr(draw, dt, (L, B, H))) if (cell.lower() == "lstm" and h is not None) else h
    return {"ctor": ctor, "attn": attn, "x": arr(draw, dt, (T, B, E)), "memory": arr(draw, dt, (S, B, Hm)),
            "memory_lengths": maybe(draw, lambda: arr(draw, "int64", (B,), 1, S + 1, fill="range")), "hx": hx,
            "feed0": maybe(draw, lambda: arr(draw, dt, (B, Ho))), "grad": "ones",
            "grad_h_n": pick(draw, (None, "ones")), "train": coin(draw), "backward": True}


def b_seq2seq(draw):
    dtype = pick(draw, DTYPE_ARGS)
    bidirectional = coin(draw)
    H = 2 * pos(draw) if bidirectional else pos(draw)
    attention = pick(draw, (None, "dot", "general", "additive"))
    ctor = {"src_vocab_size": pos(draw) + 1, "tgt_vocab_size": pos(draw) + 3, "embedding_dim": pos(draw),
            "hidden_size": H, "num_layers": rint(draw, 1, 2), "cell": pick(draw, ("lstm", "gru", "rnn", "LSTM")),
            "bidirectional": bidirectional, "attention": attention, "input_feed": coin(draw),
            "bridge": pick(draw, ("auto", "linear", "zeros")), "dropout": pick(draw, (0.0, 0.0, 0.3)),
            "dtype": dtype, "seed": rint(draw, 0, 5), "threads": threads_value(draw)}
    if ctor["bridge"] != "auto":
        ctor["encoder_hidden_size"] = maybe(draw, lambda: pos(draw))
    S, T, B = pos(draw), pos(draw), pos(draw)
    return {"ctor": ctor, "src": ids(draw, (S, B), ctor["src_vocab_size"]),
            "src_lengths": maybe(draw, lambda: arr(draw, "int64", (B,), 1, S + 1, fill="range")),
            "tgt_in": ids(draw, (T, B), ctor["tgt_vocab_size"]), "tgt_out": ids(draw, (T, B), ctor["tgt_vocab_size"]),
            "scheduled_sampling": pick(draw, (0.0, 0.5)), "train": coin(draw),
            "method": pick(draw, ("greedy", "beam", "sample")), "beam_width": rint(draw, 1, 3),
            "max_len": rint(draw, 1, 4)}


def b_core_recurrent_stream(draw):
    cell = pick(draw, CELLS)
    dtype = pick(draw, ("float32", "float64"))
    G, B, I, H, L, cap = GATES[cell], pos(draw), pos(draw), pos(draw), rint(draw, 1, 2), rint(draw, 1, 3)
    weights = [(arr(draw, dtype, (G * H, I if l == 0 else H)), arr(draw, dtype, (G * H, H)),
                maybe(draw, lambda: arr(draw, dtype, (G * H,))), maybe(draw, lambda: arr(draw, dtype, (G * H,))), None)
               for l in range(L)]
    xs = [arr(draw, dtype, (rint(draw, 1, cap), B, I)) for _ in range(rint(draw, 0, 2))]
    return {"cell": cell, "weights": weights, "batch_size": B, "capacity": cap, "threads": threads_value(draw, False),
            "xs": xs, "reserve": maybe(draw, lambda: rint(draw, 1, 4)), "reset": coin(draw), "bf16": coin(draw)}


def b_rnn_stream(draw):
    kind = pick(draw, ("lstm", "gru", "rnn"))
    dtype = pick(draw, DTYPE_ARGS)
    dt = np.dtype(dtype).name
    B, I, H, L, cap = pos(draw), pos(draw), pos(draw), rint(draw, 1, 2), rint(draw, 1, 4)
    ctor = {"kind": kind, "input_size": I, "hidden_size": H, "num_layers": L, "bias": coin(draw), "dtype": dtype,
            "seed": rint(draw, 0, 5), "threads": threads_value(draw), "precision": pick(draw, (None, "bf16"))}
    chunks = [arr(draw, dt, (rint(draw, 1, cap), B, I)) for _ in range(rint(draw, 0, 3))]
    state = None
    if coin(draw):
        h = arr(draw, dt, (L, B, H))
        state = (h, arr(draw, dt, (L, B, H))) if kind == "lstm" else h
    return {"ctor": ctor, "chunks": chunks, "batch_size": B, "capacity": cap, "threads": threads_value(draw),
            "state": state, "reserve": maybe(draw, lambda: rint(draw, 1, 6)), "reload": coin(draw),
            "step": coin(draw)}


# -- issue 14, forecasting and output recurrence: mse_loss, SequenceRegressor, OutputRecurrentRNN, series --

def b_core_mse_loss(draw):
    lead, F, dt = shape(draw, 2), dim(draw), floats(draw)
    full = lead + (F,)
    mask = pick(draw, (None, "position", "element"))
    return {"input": arr(draw, dt, full), "target": arr(draw, dt, full),
            "mask": None if mask is None else arr(draw, dt, lead if mask == "position" and lead else full,
                                                  fill="ones"),
            "reduction": pick(draw, ("mean", "sum", "none")), "compute_grad": coin(draw),
            "threads": threads_value(draw, False)}


def b_mse_function(draw):
    lead, F, dt = shape(draw, 2), dim(draw), floats(draw)
    full = lead + (F,)
    mask = pick(draw, (None, "bool", "position", "element"))
    mshape = lead if mask in ("bool", "position") and lead else full
    return {"input": arr(draw, dt, full), "target": arr(draw, dt, full),
            "kwargs": {"reduction": pick(draw, ("mean", "sum", "none")), "compute_grad": coin(draw),
                       "threads": threads_value(draw),
                       "mask": None if mask is None else arr(draw, "bool" if mask == "bool" else dt, mshape,
                                                             fill=None if mask == "bool" else "ones")}}


def b_mse_module(draw):
    lead, F, dt = shape(draw, 2), dim(draw), floats(draw)
    full = lead + (F,)
    reduction = pick(draw, ("mean", "sum", "none"))
    return {"ctor": {"reduction": reduction, "threads": threads_value(draw)}, "input": arr(draw, dt, full),
            "target": arr(draw, dt, full), "mask": maybe(draw, lambda: arr(draw, dt, full, fill="ones")),
            "grad": arr(draw, dt, full) if reduction == "none" else 1.0}


def b_sequence_regressor(draw):
    ctor = {"input_size": pos(draw), "hidden_size": pos(draw), "output_size": pos(draw),
            "num_layers": rint(draw, 1, 2), "cell": pick(draw, ("lstm", "gru", "rnn")), "bidirectional": coin(draw),
            "dropout": pick(draw, (0.0, 0.2)), "batch_first": coin(draw), "dtype": pick(draw, DTYPE_ARGS), "seed": 0,
            "threads": threads_value(draw)}
    T, B = dim(draw), dim(draw)
    shp = (B, T) if ctor["batch_first"] else (T, B)
    dt = np.dtype(ctor["dtype"]).name
    return {"ctor": ctor, "x": arr(draw, dt, shp + (ctor["input_size"],)),
            "target": arr(draw, dt, shp + (ctor["output_size"],)),
            "lengths": maybe(draw, lambda: arr(draw, "int64", (B,), 0, T + 1, fill="range")),
            "reduction": pick(draw, ("mean", "sum")), "train": coin(draw)}


def b_output_recurrent(draw):
    ctor = {"input_size": pos(draw), "hidden_size": pos(draw), "output_size": pos(draw),
            "dtype": pick(draw, DTYPE_ARGS), "seed": 0, "threads": threads_value(draw)}
    T, B = dim(draw), dim(draw)
    dt = np.dtype(ctor["dtype"]).name
    return {"ctor": ctor, "x": arr(draw, dt, (T, B, ctor["input_size"])),
            "target": arr(draw, dt, (T, B, ctor["output_size"])),
            "y0": maybe(draw, lambda: arr(draw, dt, (B, ctor["output_size"]))),
            "reduction": pick(draw, ("mean", "sum"))}


def b_core_output_recurrent(draw):
    T, B, I, H, O, dt = dim(draw), dim(draw), pos(draw), pos(draw), pos(draw), floats(draw)
    return {"x": arr(draw, dt, (T, B, I)), "w_ih": arr(draw, dt, (H, I)), "w_oh": arr(draw, dt, (H, O)),
            "b_h": maybe(draw, lambda: arr(draw, dt, (H,))), "w_ho": arr(draw, dt, (O, H)),
            "b_o": maybe(draw, lambda: arr(draw, dt, (O,))), "y0": maybe(draw, lambda: arr(draw, dt, (B, O))),
            "threads": threads_value(draw, False)}

def b_series(draw):
    k = rint(draw, 0, 2)
    if k == 0:
        rows = [f"{1700 + i},{pick(draw, ('5', '7.5', 'nan', '', 'x', '1e400', '-3'))}" for i in range(rint(draw, 0, 4))]
        text = pick(draw, ('"YEAR","V"\n', "", "1700,1\n")) + "\n".join(rows)
    else:
        text = draw(st.text(alphabet='0123456789,.\n"-naYE', max_size=40))
    return {"text": text, "values": arr(draw, floats(draw), (dim(draw),))}



def _bilm_ctor(draw):
    V, E = pos(draw), pos(draw)
    ctor = {"vocab_size": V, "embedding_dim": E, "hidden_size": E, "num_layers": rint(draw, 1, 3),
            "dropout": pick(draw, (0.0, 0.25)), "residual": coin(draw), "tie_weights": coin(draw),
            "batch_first": coin(draw), "padding_idx": maybe(draw, lambda: rint(draw, 0, V - 1)),
            "dtype": pick(draw, DTYPE_ARGS), "seed": 0, "threads": threads_value(draw)}
    if rint(draw, 0, 3) == 0:  # an LSTM with projections, P = E
        ctor["hidden_size"] = E + rint(draw, 1, 3)
        ctor["proj_size"] = E
    if V >= 3 and not ctor["tie_weights"] and coin(draw):
        ctor["adaptive_softmax"] = _cutoffs(draw, V)
        ctor["adaptive_div_value"] = pick(draw, (1.0, 2.0, 4.0))
    return ctor


def _bilm_tokens(draw, ctor):
    T, B = pos(draw), pos(draw)
    V = ctor["vocab_size"]
    if rint(draw, 0, 4) == 0:  # a list of ragged sequences
        return [ids(draw, (rint(draw, 1, 6),), V) for _ in range(B)], None
    shp = (B, T) if ctor["batch_first"] else (T, B)
    return ids(draw, shp, V), maybe(draw, lambda: arr(draw, "int64", (B,), 1, T + 1, fill="range"))


def b_bilm(draw):
    ctor = _bilm_ctor(draw)
    tokens, lengths = _bilm_tokens(draw, ctor)
    return {"ctor": ctor, "tokens": tokens, "lengths": lengths, "train": coin(draw),
            "weights": pick(draw, (None, None, "zero", "big", "nan")), "mix_only": coin(draw)}


def b_scalar_mix(draw):
    N = pos(draw)
    dt = floats(draw)
    shp = (N,) + shape(draw, 2)
    return {"ctor": {"num_representations": N, "initial_gamma": pick(draw, (1.0, 0.5, -2.0)), "dtype": dt},
            "layers": arr(draw, dt, shp), "grad": maybe(draw, lambda: arr(draw, dt, shp[1:]))}


def b_elmo_classifier(draw):
    b = _bilm_ctor(draw)
    ctor = {k: b[k] for k in ("vocab_size", "embedding_dim", "hidden_size", "num_layers", "residual", "padding_idx",
                              "batch_first", "dtype", "seed", "threads")}
    if "proj_size" in b:
        ctor["proj_size"] = b["proj_size"]
    ctor.update(num_classes=pos(draw), head_hidden=pos(draw), bidirectional=coin(draw),
                pooling=pick(draw, ("last", "mean", "max")), dropout=pick(draw, (0.0, 0.3)), finetune=coin(draw),
                bilm_dropout=pick(draw, (0.0, 0.2)))
    T, B = pos(draw), pos(draw)
    shp = (B, T) if ctor["batch_first"] else (T, B)
    return {"ctor": ctor, "x": ids(draw, shp, ctor["vocab_size"]), "labels": ids(draw, (B,), ctor["num_classes"]),
            "lengths": maybe(draw, lambda: arr(draw, "int64", (B,), 1, T + 1, fill="range")),
            "reduction": pick(draw, ("mean", "sum")), "train": coin(draw),
            "from_bilm": coin(draw) and "proj_size" not in ctor and ctor["residual"]}

TARGETS = {
    # name: (strategy, what it covers, weight of its example budget)
    "nn_stream": (scen("rnn_stream", b_rnn_stream), ["nn.Stream"], 1),
    "core_recurrent_stream": (call("fuzz.scenarios.core_recurrent_stream", b_core_recurrent_stream, public=False),
                              ["_core.RecurrentStream"], 0.7),
    "core_embedding_forward": (core("embedding_forward", b_embedding_forward), ["_core.embedding_forward"], 1),
    "core_embedding_backward": (core("embedding_backward", b_embedding_backward), ["_core.embedding_backward"], 1),
    "core_linear_forward": (core("linear_forward", b_linear_forward), ["_core.linear_forward"], 1),
    "core_linear_backward": (core("linear_backward", b_linear_backward), ["_core.linear_backward"], 1),
    "core_layernorm_forward": (core("layernorm_forward", b_layernorm_forward), ["_core.layernorm_forward"], 1),
    "core_layernorm_backward": (core("layernorm_backward", b_layernorm_backward), ["_core.layernorm_backward"], 1),
    "core_cross_entropy": (core("cross_entropy", b_cross_entropy), ["_core.cross_entropy"], 1),
    "core_gemm": (core("gemm", b_gemm, positional=("a", "b", "c")), ["_core.gemm"], 1),
    "core_gemm_strided": (core("gemm_strided_test", _p(b_gemm, True)), ["_core.gemm_strided_test"], 0.5),
    "core_gemm_packed": (core("gemm_packed_test", b_gemm_packed), ["_core.gemm_packed_test"], 0.5),
    "core_gemm_threads": (core("gemm_threads", b_gemm_threads), ["_core.gemm_threads"], 0.3),
    "core_recurrent_threads": (core("recurrent_threads", b_recurrent_threads), ["_core.recurrent_threads"], 0.3),
    "core_sgd_step": (core("sgd_step", _p(b_step, "sgd"), positional=("param", "grad", "momentum_buffer")),
                      ["_core.sgd_step"], 0.7),
    "core_adam_step": (core("adam_step", _p(b_step, "adam"), positional=("param", "grad", "exp_avg", "exp_avg_sq")),
                       ["_core.adam_step"], 0.7),
    "core_rmsprop_step": (core("rmsprop_step", _p(b_step, "rmsprop"), positional=("param", "grad", "square_avg")),
                          ["_core.rmsprop_step"], 0.7),
    "core_adagrad_step": (core("adagrad_step", _p(b_step, "adagrad"), positional=("param", "grad", "sum")),
                          ["_core.adagrad_step"], 0.7),
    "core_clamp": (core("clamp_", _p(b_array_list, "clamp_")), ["_core.clamp_"], 0.5),
    "core_scale": (core("scale_", _p(b_array_list, "scale_")), ["_core.scale_"], 0.5),
    "core_norm_power_sum": (core("norm_power_sum", _p(b_array_list, "norm")), ["_core.norm_power_sum"], 0.5),
    "core_vmath": (core("vmath", b_vmath), ["_core.vmath"], 0.5),
    "core_adaptive_softmax": (core("adaptive_softmax", b_core_adaptive_softmax), ["_core.adaptive_softmax"], 1),
    "core_attention_keys": (core("attention_keys", b_attention_keys), ["_core.attention_keys"], 0.5),
    "core_attention_forward": (core("attention_forward", b_attention_forward), ["_core.attention_forward"], 1),
    "core_attention": (call("fuzz.scenarios.core_attention", b_core_attention, public=False),
                       ["_core.attention_keys", "_core.attention_forward", "_core.attention_backward"], 1.5),
    "core_info": (_info_calls(), ["_core.gemm_config", "_core.gemm_kernel", "_core.isa", "_core.max_threads",
                                  "_core.openmp_enabled", "_core.supported_isas", "_core.thread_limit",
                                  "_core.vmath_kernel", "_core.cells_kernel", "_core.int8_kernel",
                                  "_core.bf16_kernel"], 0.2),
    "core_quantize_rows_s8": (core("quantize_rows_s8", b_quantize_rows), ["_core.quantize_rows_s8"], 0.5),
    "core_quantize_u8": (core("quantize_u8", b_quantize_u8), ["_core.quantize_u8"], 0.5),
    "core_int8_gemv_acc": (core("int8_gemv_acc", b_int8_gemv_acc), ["_core.int8_gemv_acc"], 0.5),
    "core_int8_gemv": (core("int8_gemv", b_int8_gemv), ["_core.int8_gemv"], 0.5),
    "core_to_bf16": (core("to_bf16", b_to_bf16), ["_core.to_bf16"], 0.5),
    "core_bf16_gemv": (core("bf16_gemv", b_bf16_gemv), ["_core.bf16_gemv"], 0.5),
    "core_round_bf16": (core("round_bf16", b_round_bf16), ["_core.round_bf16"], 0.5),
    "core_gemm_bf16": (core("gemm_bf16", b_gemm_bf16), ["_core.gemm_bf16", "_core.gemm_bf16_kernel"], 0.5),
    "core_cell_forward_test": (core("cell_forward_test", b_cell_forward_test), ["_core.cell_forward_test"], 0.5),
    "core_cell_backward_test": (core("cell_backward_test", b_cell_backward_test), ["_core.cell_backward_test"], 0.5),
    "core_recurrent": (call("fuzz.scenarios.core_recurrent", b_core_recurrent, public=False),
                       ["_core.recurrent_forward", "_core.recurrent_backward", "_core.RecurrentWorkspace"], 2),
    # while "core_token_list" is known, its RuntimeError is tolerated here
    "core_decoder": (call("fuzz.scenarios.core_decoder", _p(b_core_decoder, 1 if is_known("lmdecoder_v0") else 0),
                          public=False,
                          allow=_known_allow("core_token_list", "RuntimeError")), ["_core.LMDecoder"], 2),
    # public API
    "nn_rnn_layer": (scen("rnn_layer", b_rnn_layer, frozen=("cls",)), ["nn.RNN", "nn.LSTM", "nn.GRU", "nn.RNNBase"], 3),
    "nn_rnn_cell": (scen("rnn_cell", b_rnn_cell, frozen=("cls",)), ["nn.RNNCell", "nn.LSTMCell", "nn.GRUCell"], 2),
    "nn_embedding": (scen("embedding", b_embedding), ["nn.Embedding"], 1),
    "nn_linear": (scen("linear", b_linear), ["nn.Linear"], 1),
    "nn_attention": (scen("attention", b_attention), ["nn.Attention"], 1.5),
    "core_seq2seq_decoder": (call("fuzz.scenarios.core_seq2seq_decoder", b_core_seq2seq_decoder, public=False),
                             ["_core.Seq2SeqDecoder"], 1),
    "sampling_seq2seq_decode": (scen("seq2seq_decode", b_seq2seq_decode),
                                ["sampling.seq2seq_decode", "sampling.DecoderParts"], 1.5),
    "nn_dropout": (scen("dropout", b_dropout), ["nn.Dropout"], 0.5),
    "nn_layernorm": (scen("layernorm", b_layernorm), ["nn.LayerNorm"], 1),
    "nn_cross_entropy": (scen("loss_function", b_loss_function), ["nn.cross_entropy"], 1),
    "nn_cross_entropy_loss": (scen("loss_module", b_loss_module), ["nn.CrossEntropyLoss"], 0.7),
    "nn_language_model": (scen("language_model", b_language_model), ["nn.LanguageModel"], 2),
    "nn_sequence_classifier": (scen("sequence_classifier", b_sequence_classifier), ["nn.SequenceClassifier"], 1),
    "nn_sequence_tagger": (scen("sequence_tagger", b_sequence_tagger), ["nn.SequenceTagger"], 1),
    "nn_conditioned_generator": (scen("conditioned_generator", b_conditioned_generator), ["nn.ConditionedGenerator"],
                                 1),
    "nn_module_api": (scen("module_api", b_module_api, frozen=("kind",)), ["nn.Module", "nn.Parameter"], 0.5),
    "optim_optimizer": (scen("optimizer", b_optimizer, frozen=("name",)),
                        ["optim.SGD", "optim.Adam", "optim.AdamW", "optim.RMSprop", "optim.Adagrad", "optim.Optimizer"],
                        2),
    # while "optim_state_scalar" is known, its AttributeError is tolerated here
    "optim_load_state": (scen("optimizer_load_state", b_optimizer_load_state, frozen=("name",),
                              allow=("KeyError",) + _known_allow("optim_state_scalar", "AttributeError")), [], 1),
    "optim_scheduler": (scen("scheduler", b_scheduler, frozen=("name", "opt"), allow=("KeyError",)),
                        ["optim.StepLR", "optim.MultiStepLR", "optim.ExponentialLR", "optim.CosineAnnealingLR",
                         "optim.ZarembaLR", "optim.ReduceLROnPlateau", "optim.LRScheduler", "optim.LambdaLR",
                         "optim.MultiplicativeLR"], 1),
    "optim_clip_norm": (scen("clip_norm", _p(b_clip, "norm"), allow=("RuntimeError",)), ["optim.clip_grad_norm_"], 1),
    "optim_clip_value": (scen("clip_value", _p(b_clip, "value")), ["optim.clip_grad_value_"], 0.7),
    "sampling_generate": (scen("generate", _p(b_generate, "generate")), ["sampling.generate"], 2),
    "quantized_lm": (scen("quantized_lm", b_quantized_lm), ["quantize", "nn.quantize", "nn.QuantizedLanguageModel"], 1),
    "sampling_stream": (scen("stream", _p(b_generate, "stream")), ["sampling.stream"], 1),
    "sampling_beam_search": (scen("beam_search", _p(b_generate, "beam_search")), ["sampling.beam_search"], 2),
    # while "decoder_pybind" is known, a pybind11 dump or an AttributeError from Decoder's methods is tolerated here
    "sampling_decoder": (scen("decoder", b_decoder, public=not is_known("decoder_pybind"),
                              allow=_known_allow("decoder_pybind", "AttributeError")), ["sampling.Decoder"], 1),
    # while "save_array_dtype" is known, its SafetensorError is tolerated here
    "io_save_load": (scen("save_load", b_save_load, frozen=("kind", "mutate"),
                          allow=_known_allow("save_array_dtype", "SafetensorError")),
                     ["save", "load", "io.Checkpoint"], 2),
    "io_load_bytes": (scen("load_bytes", b_load_bytes), ["load"], 1),
    "io_load_state_dict": (scen("load_state_dict", b_load_state_dict, frozen=("kind", "base"), allow=("KeyError",)),
                           ["nn.Module.load_state_dict"], 1),
    "io_from_torch": (scen("from_torch", b_from_torch), ["from_torch"], 0.3),
    "data_char_tokenizer": (scen("char_tokenizer", b_char_tokenizer, huge=False), ["data.CharTokenizer"], 1),
    "data_word_tokenizer": (scen("word_tokenizer", b_word_tokenizer, huge=False), ["data.WordTokenizer"], 1),
    "data_vocabulary": (scen("vocabulary", b_vocabulary, huge=False), ["data.Vocabulary"], 0.5),
    "data_tokenizer_from_dict": (scen("tokenizer_from_dict", b_tokenizer_from_dict, huge=False),
                                 ["data.tokenizer_from_dict"], 0.5),
    "data_stream_batcher": (scen("stream_batcher", b_stream_batcher, huge=False), ["data.StreamBatcher"], 0.7),
    "data_lm_batches": (scen("lm_batches", b_lm_batches, huge=False), ["data.lm_batches"], 0.5),
    "data_pad_sequences": (scen("pad_sequences", b_pad_sequences, huge=False), ["data.pad_sequences"], 0.7),
    "data_bucket_iterator": (scen("bucket_iterator", b_bucket_iterator, huge=False), ["data.BucketIterator"], 0.7),
    "data_read_text": (scen("read_text", b_read_text, huge=False, frozen=("name", "as_dir")), ["data.read_text"], 0.5),
    "nn_rnn_cell_base": (scen("rnn_cell_base", b_rnn_cell_base), ["nn.RNNCellBase"], 1),
    "nn_adaptive_softmax": (scen("adaptive_softmax", b_adaptive_softmax), ["nn.AdaptiveLogSoftmaxWithLoss"], 1.5),
    "nn_fixed_window_lm": (scen("fixed_window_lm", b_fixed_window_lm), ["nn.FixedWindowLM"], 1),
    # (evaluate reads every window of its ids: a huge broadcast corpus is legitimate work)
    "evaluate": (scen("evaluate", b_evaluate, frozen=("kind",), huge=False), ["evaluate"], 1),
    "ngram_kneser_ney": (scen("ngram", b_ngram, huge=False, frozen=("arpa",)), ["ngram"], 1),
    "ngram_load_arpa": (scen("load_arpa_bytes", b_load_arpa_bytes), ["ngram"], 0.5),
    # (without the corpus installed every call raises MissingCorpusError, the documented answer)
    "datasets_movie_reviews": (scen("movie_reviews", b_movie_reviews, allow=("MissingCorpusError",), huge=False),
                               ["datasets.movie_reviews"], 0.3),
    "data_pair_tokenizer": (scen("pair_tokenizer", b_pair_tokenizer, huge=False), ["data.pair_tokenizer"], 0.5),
    "data_pair_dataset": (scen("pair_dataset", b_pair_dataset, huge=False), ["data.PairDataset", "data.PairBatch"],
                          0.7),
    "data_pair_batcher": (scen("pair_batcher", b_pair_batcher, huge=False), ["data.PairBatcher"], 0.7),
    "datasets_split_pairs": (scen("split_pairs", b_split_pairs, huge=False),
                             ["datasets.split_pairs", "datasets.ParallelCorpus"], 0.5),
    "datasets_osis_text": (scen("osis_text", b_osis_text, huge=False), ["datasets.osis_text"], 0.3),
    "datasets_parallel_files": (scen("parallel_files", b_parallel_files, huge=False), ["datasets.parallel_files"],
                                0.3),
    "datasets_read_tsv": (scen("read_tsv", b_read_tsv, huge=False), ["datasets.read_tsv"], 0.3),
    # (without the Debian packages every call raises MissingCorpusError, the documented answer)
    "datasets_bible_pairs": (scen("bible_pairs", b_bible_pairs, allow=("MissingCorpusError",), huge=False),
                             ["datasets.bible_pairs"], 0.2),
    # (without sacrebleu every call raises the ImportError that names pip install sacrebleu)
    "metrics_bleu": (scen("bleu", b_bleu, allow=("ImportError",), huge=False), ["metrics.bleu"], 0.5),
    "metrics_token_accuracy": (scen("token_accuracy", b_token_accuracy, huge=False), ["metrics.token_accuracy"], 0.5),
    "metrics_perplexity": (scen("perplexity", b_perplexity, huge=False), ["metrics.perplexity"], 0.3),
    "threads": (scen("with_threads", b_with_threads, max_mutations=0), ["set_num_threads", "get_num_threads"], 1),
    "trainer": (scen("trainer_fit", b_trainer, huge=False), ["Trainer"], 0.5),
    "tasks": (scen("task_fit", b_task_fit, huge=False, frozen=("kind",)),
              ["Trainer", "tasks.Task", "tasks.LanguageModelTask", "tasks.Seq2SeqTask",
               "tasks.ClassificationTask"], 0.5),
    "diagnostics": (scen("diagnostics", b_diagnostics, frozen=("cls",)),
                    ["diagnostics.distance_profile", "diagnostics.record_grad_norms", "diagnostics.grad_norms",
                     "diagnostics.recurrent_spectra", "diagnostics.recurrent_layers"], 0.5),
    "core_attn_decoder": (call("fuzz.scenarios.core_attn_decoder", b_core_attn_decoder, public=False),
                          ["_core.attn_decoder_forward", "_core.attn_decoder_backward", "_core.AttnDecoderWorkspace"],
                          1.5),
    "nn_input_feed_rnn": (scen("input_feed_rnn", b_input_feed_rnn), ["nn.InputFeedRNN"], 1.5),
    "nn_seq2seq": (scen("seq2seq_model", b_seq2seq), ["nn.Seq2Seq", "nn.Encoder", "nn.Decoder", "nn.Bridge"], 1.5),
    "distributed_world_of_one": (scen("world_of_one", b_world_of_one, huge=False),
                                 ["distributed.World", "distributed.init", "distributed.in_mpi_environment"], 0.3),
    # issue 14: forecasting and output recurrence
    "core_mse_loss": (core("mse_loss", b_core_mse_loss), ["_core.mse_loss"], 1),
    "core_output_recurrent": (core("output_recurrent_free_run", b_core_output_recurrent),
                              ["_core.output_recurrent_free_run"], 1),
    "nn_mse_loss": (scen("mse_function", b_mse_function), ["nn.mse_loss"], 1),
    "nn_mse_loss_module": (scen("mse_module", b_mse_module), ["nn.MSELoss"], 0.7),
    "nn_sequence_regressor": (scen("sequence_regressor", b_sequence_regressor), ["nn.SequenceRegressor"], 1),
    "nn_output_recurrent": (scen("output_recurrent", b_output_recurrent), ["nn.OutputRecurrentRNN"], 1),
    "datasets_series": (scen("series", b_series, huge=False),
                        ["datasets.check_series", "datasets.parse_series_csv"], 0.3),
    "nn_bilm": (scen("bilm", b_bilm), ["nn.BiLM"], 1.5),
    "nn_scalar_mix": (scen("scalar_mix", b_scalar_mix), ["nn.ScalarMix"], 0.7),
    "nn_elmo_classifier": (scen("elmo_classifier", b_elmo_classifier), ["nn.ELMoClassifier"], 1),
}
