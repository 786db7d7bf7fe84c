// Attention weights from Python, parsed one way for every binding that runs attention (the
// attention kernels' own bindings, the input-feeding decoder loop, seq2seq generation).
//
// What Python passes (rnncore.nn.Attention.weights_for_core() builds it):
//   weights = (kind, w_in, w_q, b_q, w_k, v, w_out, b_out)       a tuple (or list) of 8
//     kind   str: "dot", "general", "additive" (aliases "mlp", "concat", "bahdanau")
//     w_in   general: (Hm, Hq)            else None      OpenNMT-py linear_in.weight
//     w_q    additive: (A, Hq)            else None      linear_query.weight
//     b_q    additive: (A,) or None       else None      linear_query.bias
//     w_k    additive: (A, Hm)            else None      linear_context.weight
//     v      additive: (1, A) or (A,)     else None      v.weight
//     w_out  (Ho, Hm + Hq)                               linear_out.weight
//     b_out  (Ho,) or None                               linear_out.bias
//   grads = (dw_in, dw_q, db_q, dw_k, dv, dw_out, db_out)      a tuple (or list) of 7
//     each None (not wanted) or a writable array shaped like its weight (present where the
//     weight is present; must be None where the weight is None); gradients are added into.
// Every array: C-contiguous, the dtype T of the call (no conversion here). The sizes come from
// the arrays: Ho, Hm + Hq from w_out; Hq, Hm from w_in (general) or w_q, w_k (additive); dot
// has Hq = Hm = (Hm + Hq) / 2. The callers then check their queries and memory against
// w.Hq and w.Hm. Messages name the function and the entry (e.g. "weights[6] (w_out)").
//
// Usage in a binding (T already dispatched, e.g. on the memory's dtype):
//   std::vector<py::array> keep;                      // keeps the arrays alive for the call
//   AttentionWeights<T> w = attention_weights_from<T>(fn, weights_obj, keep);
//   AttentionGrads<T> g = attention_grads_from<T>(fn, grads_obj, w, keep);
//   std::vector<std::int64_t> lens = attention_lengths_from(fn, "memory_lengths", lengths_obj, B, S);
#pragma once

#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "ops/attention.h"

namespace rnncore {

// "dot" / "general" / "additive" (or an alias: "mlp", "concat", "bahdanau"); ValueError else.
inline AttentionKind parse_attention_kind(const char* fn, const std::string& kind) {
  if (kind == "dot") return AttentionKind::Dot;
  if (kind == "general") return AttentionKind::General;
  if (kind == "additive" || kind == "mlp" || kind == "concat" || kind == "bahdanau") return AttentionKind::Additive;
  throw py::value_error(std::string(fn) +
                        ": attention kind must be one of 'dot', 'general', 'additive' (or 'mlp', 'concat', "
                        "'bahdanau'), got '" + kind + "'");
}

namespace attention_detail {

inline py::tuple as_tuple(const char* fn, const char* name, const py::handle& obj, std::size_t n) {
  if (!py::isinstance<py::tuple>(obj) && !py::isinstance<py::list>(obj))
    throw py::type_error(std::string(fn) + ": " + name + " must be a tuple of " + std::to_string(n) +
                         ", got " + py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  py::tuple t = py::tuple(py::reinterpret_borrow<py::object>(obj));
  if (t.size() != n)
    throw py::value_error(std::string(fn) + ": " + name + " must have " + std::to_string(n) + " entries, got " +
                          std::to_string(t.size()));
  return t;
}

inline std::string entry(const char* name, int i, const char* what) {
  return std::string(name) + "[" + std::to_string(i) + "] (" + what + ")";
}

inline void must_be_none(const char* fn, const std::string& name, const py::handle& obj, const char* kind) {
  if (!obj.is_none())
    throw py::value_error(std::string(fn) + ": " + name + " must be None for " + kind + " attention");
}

inline index_t dim_of(const py::handle& obj, int axis) {
  return py::reinterpret_borrow<py::array>(obj).shape(axis);
}

template <typename T>
const T* get(const char* fn, const std::string& name, const py::handle& obj, const std::vector<index_t>& dims,
             std::vector<py::array>& keep) {
  keep.push_back(checked<T>(fn, name.c_str(), obj, dims));
  return cptr<T>(keep.back());
}

}  // namespace attention_detail

// weights: see the top of this file. The arrays are appended to `keep`.
template <typename T>
AttentionWeights<T> attention_weights_from(const char* fn, const py::handle& weights, std::vector<py::array>& keep) {
  using namespace attention_detail;
  const py::tuple t = as_tuple(fn, "weights", weights, 8);
  if (!py::isinstance<py::str>(t[0]))
    throw py::type_error(std::string(fn) + ": weights[0] (kind) must be a str, got " +
                         py::str(py::type::of(t[0]).attr("__name__")).cast<std::string>());
  AttentionWeights<T> w;
  w.kind = parse_attention_kind(fn, t[0].cast<std::string>());
  const char* kname = w.kind == AttentionKind::Dot ? "dot" : w.kind == AttentionKind::General ? "general" : "additive";
  // w_out (Ho, Hm + Hq) first: it is there for every kind.
  w.w_out = get<T>(fn, entry("weights", 6, "w_out"), t[6], {-1, -1}, keep);
  w.Ho = dim_of(t[6], 0);
  const index_t Wc = dim_of(t[6], 1);
  if (w.Ho < 1 || Wc < 2)
    throw py::value_error(std::string(fn) + ": weights[6] (w_out) must have shape (Ho, Hm + Hq) with Ho >= 1 and "
                          "Hm, Hq >= 1, got " + shape_str(keep.back()));
  if (w.kind == AttentionKind::Dot) {
    for (int i = 1; i <= 5; ++i) must_be_none(fn, "weights[" + std::to_string(i) + "]", t[i], kname);
    if (Wc % 2 != 0)
      throw py::value_error(std::string(fn) + ": weights[6] (w_out) must have shape (Ho, 2 H) for dot attention "
                            "(Hq == Hm), got " + shape_str(keep.back()));
    w.Hq = w.Hm = Wc / 2;
  } else if (w.kind == AttentionKind::General) {
    for (int i = 2; i <= 5; ++i) must_be_none(fn, "weights[" + std::to_string(i) + "]", t[i], kname);
    w.w_in = get<T>(fn, entry("weights", 1, "w_in"), t[1], {-1, -1}, keep);
    w.Hm = dim_of(t[1], 0);
    w.Hq = dim_of(t[1], 1);
  } else {
    must_be_none(fn, "weights[1]", t[1], kname);
    w.w_q = get<T>(fn, entry("weights", 2, "w_q"), t[2], {-1, -1}, keep);
    w.A = dim_of(t[2], 0);
    w.Hq = dim_of(t[2], 1);
    if (!t[3].is_none()) w.b_q = get<T>(fn, entry("weights", 3, "b_q"), t[3], {w.A}, keep);
    w.w_k = get<T>(fn, entry("weights", 4, "w_k"), t[4], {w.A, -1}, keep);
    w.Hm = dim_of(t[4], 1);
    const bool v2 = py::isinstance<py::array>(t[5]) && py::reinterpret_borrow<py::array>(t[5]).ndim() == 2;
    w.v = get<T>(fn, entry("weights", 5, "v"), t[5], v2 ? std::vector<index_t>{1, w.A} : std::vector<index_t>{w.A},
                 keep);
    if (w.A < 1) throw py::value_error(std::string(fn) + ": weights[2] (w_q) must have A >= 1 rows, got 0");
  }
  if (w.Hq < 1 || w.Hm < 1)
    throw py::value_error(std::string(fn) + ": attention sizes must be >= 1, got Hq = " + std::to_string(w.Hq) +
                          ", Hm = " + std::to_string(w.Hm));
  if (Wc != w.Hm + w.Hq)
    throw py::value_error(std::string(fn) + ": weights[6] (w_out) must have shape (Ho, Hm + Hq) = (" +
                          std::to_string(w.Ho) + ", " + std::to_string(w.Hm + w.Hq) + "), got " +
                          shape_str(py::reinterpret_borrow<py::array>(t[6])));
  if (!t[7].is_none()) w.b_out = get<T>(fn, entry("weights", 7, "b_out"), t[7], {w.Ho}, keep);
  return w;
}

// grads: see the top of this file; None as a whole means no weight gradients.
template <typename T>
AttentionGrads<T> attention_grads_from(const char* fn, const py::handle& grads, const AttentionWeights<T>& w,
                                       std::vector<py::array>& keep) {
  using namespace attention_detail;
  AttentionGrads<T> g;
  if (grads.is_none()) return g;
  const py::tuple t = as_tuple(fn, "grads", grads, 7);
  const index_t Hq = w.Hq, Hm = w.Hm, A = w.A, Ho = w.Ho;
  const bool v2 = py::isinstance<py::array>(t[4]) && py::reinterpret_borrow<py::array>(t[4]).ndim() == 2;
  struct Slot {
    const char* what;
    const void* weight;
    std::vector<index_t> dims;
    T** out;
  };
  const Slot slots[7] = {
      {"dw_in", w.w_in, {Hm, Hq}, &g.w_in},
      {"dw_q", w.w_q, {A, Hq}, &g.w_q},
      {"db_q", w.b_q, {A}, &g.b_q},
      {"dw_k", w.w_k, {A, Hm}, &g.w_k},
      {"dv", w.v, v2 ? std::vector<index_t>{1, A} : std::vector<index_t>{A}, &g.v},
      {"dw_out", w.w_out, {Ho, Hm + Hq}, &g.w_out},
      {"db_out", w.b_out, {Ho}, &g.b_out},
  };
  for (int i = 0; i < 7; ++i) {
    const Slot& s = slots[i];
    if (t[i].is_none()) continue;
    const std::string name = entry("grads", i, s.what);
    if (s.weight == nullptr)
      throw py::value_error(std::string(fn) + ": " + name + " must be None (the attention has no such weight)");
    keep.push_back(checked_writable<T>(fn, name.c_str(), t[i], s.dims));
    *s.out = mptr<T>(keep.back());
  }
  return g;
}

// lengths: None (every row has all S positions) or an int64 array (B,) with each in [1, S].
inline std::vector<std::int64_t> attention_lengths_from(const char* fn, const char* name, const py::handle& obj,
                                                        index_t B, index_t S) {
  if (obj.is_none()) return std::vector<std::int64_t>(static_cast<std::size_t>(B), S);
  py::array a = checked<std::int64_t>(fn, name, obj, {B});
  const std::int64_t* p = cptr<std::int64_t>(a);
  for (index_t b = 0; b < B; ++b)
    if (p[b] < 1 || p[b] > S)
      throw py::value_error(std::string(fn) + ": " + name + "[" + std::to_string(b) + "] = " + std::to_string(p[b]) +
                            " is outside [1, S] = [1, " + std::to_string(S) + "]");
  return std::vector<std::int64_t>(p, p + B);
}

}  // namespace rnncore
