// _core bindings for global attention (csrc/ops/attention.h): keys, forward, backward.
// Checks and messages only; the weights tuple is parsed by bind_attention.h (shared with the
// input-feeding decoder and seq2seq generation bindings).
#include <cstring>
#include <string>
#include <vector>

#include "bindings/bind_attention.h"
#include "common/buffer.h"

namespace rnncore {

namespace {

// memory (S, B, Hm) with S >= 1.
template <typename T>
py::array checked_memory(const char* fn, const py::handle& obj, const AttentionWeights<T>& w) {
  py::array m = checked<T>(fn, "memory", obj, {-1, -1, w.Hm});
  if (m.shape(0) < 1) throw py::value_error(std::string(fn) + ": memory must have S >= 1 positions, got 0");
  return m;
}

// keys for the call: None computes them; for dot they are the memory (None or memory's shape).
template <typename T>
const T* checked_keys(const char* fn, const py::handle& obj, const py::array& memory, const AttentionWeights<T>& w,
                      py::array& keep, int threads) {
  const index_t S = memory.shape(0), B = memory.shape(1), K = w.key_size();
  if (w.kind == AttentionKind::Dot) {
    if (!obj.is_none()) checked<T>(fn, "keys", obj, {S, B, K});
    return cptr<T>(memory);
  }
  if (!obj.is_none()) {
    keep = checked<T>(fn, "keys", obj, {S, B, K});
    return cptr<T>(keep);
  }
  keep = py::array_t<T>(std::vector<index_t>{S, B, K});
  T* p = mptr<T>(keep);
  {
    py::gil_scoped_release release;
    attention_keys<T>(p, cptr<T>(memory), w, S, B, threads);
  }
  return p;
}

template <typename T>
py::object keys_py(const py::object& memory_obj, const py::object& weights_obj, int threads) {
  const char* fn = "attention_keys";
  std::vector<py::array> keep;
  const AttentionWeights<T> w = attention_weights_from<T>(fn, weights_obj, keep);
  py::array memory = checked_memory<T>(fn, memory_obj, w);
  if (w.kind == AttentionKind::Dot) return memory;
  const index_t S = memory.shape(0), B = memory.shape(1), K = w.key_size();
  checked_mul(fn, "S * B * K", checked_mul(fn, "S * B", S, B), K);
  py::array_t<T> keys(std::vector<index_t>{S, B, K});
  T* pk = keys.mutable_data();
  {
    py::gil_scoped_release release;
    attention_keys<T>(pk, cptr<T>(memory), w, S, B, threads);
  }
  return keys;
}

template <typename T>
py::tuple forward_py(const py::object& query_obj, const py::object& memory_obj, const py::object& keys_obj,
                     const py::object& lengths_obj, const py::object& weights_obj, int threads) {
  const char* fn = "attention_forward";
  std::vector<py::array> keep;
  const AttentionWeights<T> w = attention_weights_from<T>(fn, weights_obj, keep);
  py::array memory = checked_memory<T>(fn, memory_obj, w);
  const index_t S = memory.shape(0), B = memory.shape(1);
  py::array query = checked<T>(fn, "query", query_obj, {-1, B, w.Hq});
  const index_t Tq = query.shape(0);
  const std::vector<std::int64_t> lengths = attention_lengths_from(fn, "memory_lengths", lengths_obj, B, S);
  const index_t N = checked_mul(fn, "Tq * B", Tq, B);
  checked_mul(fn, "Tq * B * S", N, S);
  py::array keys_keep;
  const T* keys = checked_keys<T>(fn, keys_obj, memory, w, keys_keep, threads);
  py::array_t<T> attn_h(std::vector<index_t>{Tq, B, w.Ho}), alpha(std::vector<index_t>{Tq, B, S}),
      context(std::vector<index_t>{Tq, B, w.Hm});
  py::object saved_obj = py::none();
  AttentionSaved<T> saved;
  if (w.kind == AttentionKind::Additive) {
    checked_mul(fn, "Tq * B * S * A", checked_mul(fn, "Tq * B * S", N, S), w.A);
    py::array_t<T> tanh(std::vector<index_t>{Tq, B, S, w.A});
    saved.tanh = tanh.mutable_data();
    saved_obj = tanh;
  }
  T *ph = attn_h.mutable_data(), *pa = alpha.mutable_data(), *pc = context.mutable_data();
  {
    py::gil_scoped_release release;
    attention_forward<T>(ph, pa, pc, saved, cptr<T>(query), w.Hq, cptr<T>(memory), keys, lengths.data(), w, Tq, B,
                         S, threads);
  }
  return py::make_tuple(attn_h, alpha, context, saved_obj);
}

template <typename T>
py::tuple backward_py(const py::object& d_attn_h_obj, const py::object& d_alpha_obj, const py::object& query_obj,
                      const py::object& memory_obj, const py::object& keys_obj, const py::object& lengths_obj,
                      const py::object& alpha_obj, const py::object& context_obj, const py::object& attn_h_obj,
                      const py::object& saved_obj, const py::object& weights_obj, const py::object& grads_obj,
                      bool need_dquery, bool need_dmemory, int threads) {
  const char* fn = "attention_backward";
  std::vector<py::array> keep;
  const AttentionWeights<T> w = attention_weights_from<T>(fn, weights_obj, keep);
  const AttentionGrads<T> g = attention_grads_from<T>(fn, grads_obj, w, keep);
  py::array memory = checked_memory<T>(fn, memory_obj, w);
  const index_t S = memory.shape(0), B = memory.shape(1), K = w.key_size();
  py::array query = checked<T>(fn, "query", query_obj, {-1, B, w.Hq});
  const index_t Tq = query.shape(0);
  const std::vector<std::int64_t> lengths = attention_lengths_from(fn, "memory_lengths", lengths_obj, B, S);
  py::array d_attn_h = checked<T>(fn, "grad_attn_h", d_attn_h_obj, {Tq, B, w.Ho});
  py::array d_alpha_keep;
  const T* d_alpha = optional_cptr<T>(fn, "grad_alpha", d_alpha_obj, {Tq, B, S}, d_alpha_keep);
  py::array alpha = checked<T>(fn, "alpha", alpha_obj, {Tq, B, S});
  py::array context = checked<T>(fn, "context", context_obj, {Tq, B, w.Hm});
  py::array attn_h = checked<T>(fn, "attn_h", attn_h_obj, {Tq, B, w.Ho});
  AttentionSaved<T> saved;
  py::array saved_keep;
  if (w.kind == AttentionKind::Additive) {
    if (saved_obj.is_none())
      throw py::value_error(std::string(fn) + ": saved must be the (Tq, B, S, A) array attention_forward returned "
                            "for additive attention, got None");
    saved_keep = checked<T>(fn, "saved", saved_obj, {Tq, B, S, w.A});
    saved.tanh = const_cast<T*>(cptr<T>(saved_keep));  // read only by the backward
  } else if (!saved_obj.is_none()) {
    throw py::value_error(std::string(fn) + ": saved must be None for dot and general attention");
  }
  // The forward's outputs must be what it wrote: alpha exactly 0 past each length.
  {
    const T* pa = cptr<T>(alpha);
    for (index_t r = 0; r < Tq * B; ++r)
      for (index_t s = lengths[static_cast<std::size_t>(r % B)]; s < S; ++s)
        if (pa[r * S + s] != T(0))
          throw py::value_error(std::string(fn) + ": alpha[" + std::to_string(r / B) + ", " + std::to_string(r % B) +
                                ", " + std::to_string(s) + "] is not 0 past memory_lengths[" +
                                std::to_string(r % B) + "] = " + std::to_string(lengths[static_cast<std::size_t>(r % B)]) +
                                " (pass the alpha attention_forward returned)");
  }
  py::array keys_keep;
  const T* keys = checked_keys<T>(fn, keys_obj, memory, w, keys_keep, threads);

  py::object dq_obj = py::none(), dm_obj = py::none();
  T *pdq = nullptr, *pdm = nullptr;
  if (need_dquery) {
    py::array_t<T> dq(std::vector<index_t>{Tq, B, w.Hq});
    pdq = dq.mutable_data();
    dq_obj = dq;
  }
  if (need_dmemory) {
    py::array_t<T> dm(std::vector<index_t>{S, B, w.Hm});
    pdm = dm.mutable_data();
    dm_obj = dm;
  }
  // dkeys: dot's are the memory's; general/additive get their own buffer when anything needs them.
  const bool dot = w.kind == AttentionKind::Dot;
  const bool need_dkeys = !dot && (need_dmemory || g.w_in != nullptr || g.w_k != nullptr);
  AlignedBuffer<T> dkeys_buf;
  {
    py::gil_scoped_release release;
    if (pdm != nullptr) std::memset(pdm, 0, sizeof(T) * static_cast<std::size_t>(S * B * w.Hm));
    T* pdk = dot ? pdm : nullptr;
    if (need_dkeys) {
      dkeys_buf.resize(S * B * K);
      dkeys_buf.zero();
      pdk = dkeys_buf.data();
    }
    attention_backward<T>(pdq, w.Hq, false, pdm, pdk, g, cptr<T>(d_attn_h), d_alpha, saved, cptr<T>(query), w.Hq,
                          cptr<T>(memory), keys, lengths.data(), cptr<T>(alpha), cptr<T>(context), cptr<T>(attn_h), w,
                          Tq, B, S, threads);
    if (need_dkeys) attention_keys_backward<T>(pdm, g, pdk, cptr<T>(memory), w, S, B, threads);
  }
  return py::make_tuple(dq_obj, dm_obj);
}

}  // namespace

void bind_attention(py::module_& m) {
  m.def(
      "attention_keys",
      [](const py::object& memory, const py::object& weights, const py::object& threads_obj) {
        const int threads = checked_threads("attention_keys", threads_obj);
        return dispatch_float("attention_keys", "memory", memory,
                              [&](auto zero) { return keys_py<decltype(zero)>(memory, weights, threads); });
      },
      py::arg("memory"), py::arg("weights"), py::arg("threads") = 1,
      R"doc(Attention keys of a memory bank: memory (S, B, Hm); weights = (kind, w_in, w_q, b_q, w_k, v, w_out,
b_out) (see rnncore.nn.Attention.weights_for_core). Returns keys (S, B, K): general W_in^T m (K = Hq),
additive W_k m (K = A); dot returns memory itself.)doc");
  m.def(
      "attention_forward",
      [](const py::object& query, const py::object& memory, const py::object& weights, const py::object& keys,
         const py::object& lengths, const py::object& threads_obj) {
        const int threads = checked_threads("attention_forward", threads_obj);
        return dispatch_float("attention_forward", "memory", memory, [&](auto zero) {
          return forward_py<decltype(zero)>(query, memory, keys, lengths, weights, threads);
        });
      },
      py::arg("query"), py::arg("memory"), py::arg("weights"), py::arg("keys") = py::none(),
      py::arg("memory_lengths") = py::none(), py::arg("threads") = 1,
      R"doc(Masked global attention: query (Tq, B, Hq), memory (S, B, Hm), keys from attention_keys (or None:
computed here), memory_lengths int64 (B,) in [1, S] (None: all S), weights as attention_keys.
Returns (attn_h (Tq, B, Ho), alpha (Tq, B, S) exactly 0 past each length, context (Tq, B, Hm),
saved) where saved is the (Tq, B, S, A) tanh for additive attention, else None.)doc");
  m.def(
      "attention_backward",
      [](const py::object& grad_attn_h, const py::object& grad_alpha, const py::object& query,
         const py::object& memory, const py::object& keys, const py::object& lengths, const py::object& alpha,
         const py::object& context, const py::object& attn_h, const py::object& saved, const py::object& weights,
         const py::object& grads, bool need_dquery, bool need_dmemory, const py::object& threads_obj) {
        const int threads = checked_threads("attention_backward", threads_obj);
        return dispatch_float("attention_backward", "memory", memory, [&](auto zero) {
          return backward_py<decltype(zero)>(grad_attn_h, grad_alpha, query, memory, keys, lengths, alpha, context,
                                             attn_h, saved, weights, grads, need_dquery, need_dmemory, threads);
        });
      },
      py::arg("grad_attn_h"), py::arg("grad_alpha"), py::arg("query"), py::arg("memory"), py::arg("keys"),
      py::arg("memory_lengths"), py::arg("alpha"), py::arg("context"), py::arg("attn_h"), py::arg("saved"),
      py::arg("weights"), py::arg("grads") = py::none(), py::arg("need_dquery") = true,
      py::arg("need_dmemory") = true, py::arg("threads") = 1,
      R"doc(Backward of attention_forward (and of attention_keys): grad_attn_h (Tq, B, Ho), grad_alpha
(Tq, B, S) or None; the rest exactly what attention_forward was given and returned. grads =
(dw_in, dw_q, db_q, dw_k, dv, dw_out, db_out), each None or an array shaped like its weight,
added into (or grads None). Returns (grad_query (Tq, B, Hq) or None, grad_memory (S, B, Hm) or None);
grad_memory includes the keys' part and is exactly 0 past each length.)doc");
}

}  // namespace rnncore
