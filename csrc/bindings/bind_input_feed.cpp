// _core.attn_decoder_forward / attn_decoder_backward: the input-feeding attentional decoder
// (recurrent/attn_decoder.h) and the workspace object that links its two calls.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/bind_attention.h"
#include "recurrent/attn_decoder.h"

namespace rnncore {

namespace {

// What a forward saved for its backward. Holds the arrays the backward reads again (x, the
// memory, the dropout masks) alive. One call at a time (ExclusiveCall).
class DecoderWorkspace {
 public:
  std::unique_ptr<AttnDecoderWorkspace<float>> f32;
  std::unique_ptr<AttnDecoderWorkspace<double>> f64;
  py::object x_ref, memory_ref, masks_ref;
  std::string cell;
  std::atomic<bool> busy{false};

  template <typename T>
  AttnDecoderWorkspace<T>& get();

  bool ready() const { return (f32 && f32->ready) || (f64 && f64->ready); }
  std::string dtype() const { return f64 ? "float64" : "float32"; }
  void drop_refs() {
    x_ref = py::none();
    memory_ref = py::none();
    masks_ref = py::none();
  }
};

template <>
AttnDecoderWorkspace<float>& DecoderWorkspace::get<float>() {
  f64.reset();
  if (!f32) f32 = std::make_unique<AttnDecoderWorkspace<float>>();
  return *f32;
}
template <>
AttnDecoderWorkspace<double>& DecoderWorkspace::get<double>() {
  f32.reset();
  if (!f64) f64 = std::make_unique<AttnDecoderWorkspace<double>>();
  return *f64;
}

// A list (or tuple) of exactly L entries; TypeError / ValueError naming `name` otherwise.
std::vector<py::object> entries(const char* fn, const char* name, const py::handle& obj, index_t L) {
  if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj))
    throw py::type_error(std::string(fn) + ": " + name + " must be a list of arrays (one per layer), got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
  if (L >= 0 && static_cast<index_t>(seq.size()) != L)
    throw py::value_error(std::string(fn) + ": " + name + " must have one entry per layer (" + std::to_string(L) +
                          "), got " + std::to_string(seq.size()));
  std::vector<py::object> out;
  for (const py::handle& item : seq) out.push_back(py::reinterpret_borrow<py::object>(item));
  return out;
}

std::string item_name(const char* name, index_t l) { return std::string(name) + "[" + std::to_string(l) + "]"; }

// One array per layer, each checked against dims(l); optional entries (or the whole list
// None when `optional`) give null pointers.
template <typename T, typename Ptr, typename Dims>
std::vector<Ptr> layer_arrays(const char* fn, const char* name, const py::handle& obj, index_t L, bool optional,
                              bool writable, const Dims& dims, std::vector<py::array>& keep) {
  std::vector<Ptr> out(static_cast<std::size_t>(L), nullptr);
  if (optional && obj.is_none()) return out;
  const std::vector<py::object> items = entries(fn, name, obj, L);
  for (index_t l = 0; l < L; ++l) {
    const py::object& it = items[static_cast<std::size_t>(l)];
    if (optional && it.is_none()) continue;
    const std::string nm = item_name(name, l);
    keep.push_back(writable ? checked_writable<T>(fn, nm.c_str(), it, dims(l)) : checked<T>(fn, nm.c_str(), it, dims(l)));
    // read-only arrays are never written through a const T* (Ptr); mutable_data() would refuse them
    out[static_cast<std::size_t>(l)] = static_cast<Ptr>(writable ? keep.back().mutable_data()
                                                                 : const_cast<void*>(keep.back().data()));
  }
  return out;
}

const char* kind_name(AttentionKind k) {
  return k == AttentionKind::Dot ? "dot" : k == AttentionKind::General ? "general" : "additive";
}

template <typename T>
py::tuple forward_impl(const std::string& cell, const py::array& x_obj, const py::object& memory_obj,
                       const py::object& lengths_obj, const py::object& w_ih_obj, const py::object& w_hh_obj,
                       const py::object& b_ih_obj, const py::object& b_hh_obj, const py::object& attention_obj,
                       const py::object& h0_obj, const py::object& c0_obj, const py::object& feed0_obj,
                       const py::object& masks_obj, int threads, std::shared_ptr<DecoderWorkspace> ws) {
  const char* fn = "attn_decoder_forward";
  const CellKind kind = parse_cell(fn, cell);
  const index_t G = gate_count(kind);
  const bool lstm = kind == CellKind::LSTM;
  py::array x = checked<T>(fn, "x", x_obj, {-1, -1, -1});
  const index_t Tn = x.shape(0), B = x.shape(1), E = x.shape(2);
  if (Tn < 1 || B < 1 || E < 1)
    throw py::value_error(std::string(fn) + ": x must have shape (T, B, E) with T, B, E >= 1, got " + shape_str(x));
  std::vector<py::array> keep;
  AttentionWeights<T> aw = attention_weights_from<T>(fn, attention_obj, keep);
  const index_t Ho = aw.Ho, Hm = aw.Hm;
  py::array memory = checked<T>(fn, "memory", memory_obj, {-1, B, Hm});
  const index_t S = memory.shape(0);
  if (S < 1) throw py::value_error(std::string(fn) + ": memory must have S >= 1 positions, got " + shape_str(memory));
  const std::vector<py::object> w_hh_items = entries(fn, "w_hh", w_hh_obj, -1);
  const index_t L = static_cast<index_t>(w_hh_items.size());
  if (L < 1) throw py::value_error(std::string(fn) + ": w_hh must hold at least one layer's weight, got an empty list");
  const index_t H = checked<T>(fn, "w_hh[0]", w_hh_items[0], {-1, -1}).shape(1);
  if (aw.Hq != H)
    throw py::value_error(std::string(fn) + ": the attention's query size Hq = " + std::to_string(aw.Hq) +
                          " must equal hidden_size H = " + std::to_string(H) + " (w_hh[0] is (G*H, H)): the top "
                          "layer's h is the query");
  AttnDecoderWeights<T> w;
  w.attn = aw;
  w.w_hh = layer_arrays<T, const T*>(fn, "w_hh", w_hh_obj, L, false, false,
                                     [&](index_t) { return std::vector<index_t>{G * H, H}; }, keep);
  w.w_ih = layer_arrays<T, const T*>(fn, "w_ih", w_ih_obj, L, false, false, [&](index_t l) {
    return std::vector<index_t>{G * H, l == 0 ? E + Ho : H};
  }, keep);
  w.b_ih = layer_arrays<T, const T*>(fn, "b_ih", b_ih_obj, L, true, false,
                                     [&](index_t) { return std::vector<index_t>{G * H}; }, keep);
  w.b_hh = layer_arrays<T, const T*>(fn, "b_hh", b_hh_obj, L, true, false,
                                     [&](index_t) { return std::vector<index_t>{G * H}; }, keep);
  std::vector<std::int64_t> lens = attention_lengths_from(fn, "memory_lengths", lengths_obj, B, S);
  py::array h0, c0, feed0, masks;
  AttnDecoderForwardArgs<T> a;
  a.h0 = optional_cptr<T>(fn, "h0", h0_obj, {L, B, H}, h0);
  if (!lstm && !c0_obj.is_none())
    throw py::value_error(std::string(fn) + ": c0 is only for lstm cells, got one for " + cell_kind_name(kind));
  a.c0 = optional_cptr<T>(fn, "c0", c0_obj, {L, B, H}, c0);
  a.feed0 = optional_cptr<T>(fn, "feed0", feed0_obj, {B, Ho}, feed0);
  if (L == 1 && !masks_obj.is_none())
    throw py::value_error(std::string(fn) + ": masks (dropout between layers) must be None for one layer");
  a.masks = optional_cptr<T>(fn, "masks", masks_obj, {L - 1, Tn, B, H}, masks);
  a.x = cptr<T>(x);
  a.memory = cptr<T>(memory);
  a.lengths = lens.data();
  check_aligned(fn, "x", x);
  check_aligned(fn, "memory", memory);
  for (const py::array& k : keep) check_aligned(fn, "each of w_ih, w_hh, b_ih, b_hh and the attention weights", k);
  if (a.h0) check_aligned(fn, "h0", h0);
  if (a.c0) check_aligned(fn, "c0", c0);
  if (a.feed0) check_aligned(fn, "feed0", feed0);
  if (a.masks) check_aligned(fn, "masks", masks);
  // the workspace's sizes, before anything is allocated
  const index_t N = checked_mul(fn, "T * B", Tn, B);
  const index_t NS = checked_mul(fn, "T * B * S (the attention weights)", N, S);
  checked_mul(fn, "T * B * G*H (the saved gates)", N, G * H);
  if (aw.kind == AttentionKind::Additive) checked_mul(fn, "T * B * S * A (the saved additive scores)", NS, aw.A);
  py::array_t<T> attn_h({Tn, B, Ho}), alpha({Tn, B, S}), hn({L, B, H}), cn;
  a.attn_h = attn_h.mutable_data();
  a.alpha = alpha.mutable_data();
  a.hn = hn.mutable_data();
  if (lstm) {
    cn = py::array_t<T>({L, B, H});
    a.cn = cn.mutable_data();
  }
  if (!ws) ws = std::make_shared<DecoderWorkspace>();
  ExclusiveCall exclusive(ws->busy, fn, "workspace (its decoder)");
  AttnDecoderWorkspace<T>& wsp = ws->get<T>();
  ws->x_ref = x;
  ws->memory_ref = memory;
  ws->masks_ref = masks_obj.is_none() ? py::object(py::none()) : py::object(masks);
  ws->cell = cell_kind_name(kind);
  AttnDecoderShape shape;
  shape.kind = kind;
  shape.steps = Tn;
  shape.B = B;
  shape.E = E;
  shape.H = H;
  shape.L = L;
  shape.S = S;
  {
    py::gil_scoped_release release;
    attn_decoder_forward<T>(wsp, shape, w, a, threads);
  }
  return py::make_tuple(attn_h, alpha, hn, lstm ? py::object(cn) : py::object(py::none()), ws);
}

template <typename T>
py::tuple backward_impl(DecoderWorkspace& wsp, const py::object& d_attn_h_obj, const py::object& w_ih_obj,
                        const py::object& w_hh_obj, const py::object& attention_obj, const py::object& dw_ih_obj,
                        const py::object& dw_hh_obj, const py::object& db_ih_obj, const py::object& db_hh_obj,
                        const py::object& attention_grads_obj, const py::object& dhn_obj, const py::object& dcn_obj,
                        const py::object& d_alpha_obj, int threads) {
  const char* fn = "attn_decoder_backward";
  AttnDecoderWorkspace<T>& ws = wsp.get<T>();
  const AttnDecoderShape& s = ws.shape;
  const index_t Tn = s.steps, B = s.B, E = s.E, H = s.H, L = s.L, S = s.S, G = gate_count(s.kind);
  const bool lstm = s.kind == CellKind::LSTM;
  std::vector<py::array> keep;
  AttnDecoderWeights<T> w;
  w.attn = attention_weights_from<T>(fn, attention_obj, keep);
  const AttentionWeights<T>& aw = w.attn;
  if (aw.kind != ws.attn_kind || aw.Hq != H || aw.Hm != ws.Hm || aw.Ho != ws.Ho || aw.A != ws.A)
    throw py::value_error(std::string(fn) + ": attention must be the forward's (" + kind_name(ws.attn_kind) +
                          ", Hq = " + std::to_string(H) + ", Hm = " + std::to_string(ws.Hm) + ", Ho = " +
                          std::to_string(ws.Ho) + "), got " + kind_name(aw.kind) + ", Hq = " + std::to_string(aw.Hq) +
                          ", Hm = " + std::to_string(aw.Hm) + ", Ho = " + std::to_string(aw.Ho));
  const index_t Ho = aw.Ho, Hm = aw.Hm;
  AttnDecoderGrads<T> d;
  d.attn = attention_grads_from<T>(fn, attention_grads_obj, aw, keep);
  auto ih_dims = [&](index_t l) { return std::vector<index_t>{G * H, l == 0 ? E + Ho : H}; };
  auto hh_dims = [&](index_t) { return std::vector<index_t>{G * H, H}; };
  auto b_dims = [&](index_t) { return std::vector<index_t>{G * H}; };
  w.w_ih = layer_arrays<T, const T*>(fn, "w_ih", w_ih_obj, L, false, false, ih_dims, keep);
  w.w_hh = layer_arrays<T, const T*>(fn, "w_hh", w_hh_obj, L, false, false, hh_dims, keep);
  d.dw_ih = layer_arrays<T, T*>(fn, "dw_ih", dw_ih_obj, L, false, true, ih_dims, keep);
  d.dw_hh = layer_arrays<T, T*>(fn, "dw_hh", dw_hh_obj, L, false, true, hh_dims, keep);
  d.db_ih = layer_arrays<T, T*>(fn, "db_ih", db_ih_obj, L, true, true, b_dims, keep);
  d.db_hh = layer_arrays<T, T*>(fn, "db_hh", db_hh_obj, L, true, true, b_dims, keep);
  py::array dattn, dalpha, dhn, dcn;
  AttnDecoderBackwardArgs<T> a;
  a.d_attn_h = optional_cptr<T>(fn, "grad_attn_h", d_attn_h_obj, {Tn, B, Ho}, dattn);
  a.d_alpha = optional_cptr<T>(fn, "grad_alpha", d_alpha_obj, {Tn, B, S}, dalpha);
  a.dhn = optional_cptr<T>(fn, "grad_h_n", dhn_obj, {L, B, H}, dhn);
  if (!lstm && !dcn_obj.is_none())
    throw py::value_error(std::string(fn) + ": grad_c_n is only for lstm cells, got one for " + wsp.cell);
  a.dcn = optional_cptr<T>(fn, "grad_c_n", dcn_obj, {L, B, H}, dcn);
  for (const py::array& k : keep)
    check_aligned(fn, "each of w_ih, w_hh, dw_ih, dw_hh, db_ih, db_hh and the attention weights and gradients", k);
  if (a.d_attn_h) check_aligned(fn, "grad_attn_h", dattn);
  if (a.d_alpha) check_aligned(fn, "grad_alpha", dalpha);
  if (a.dhn) check_aligned(fn, "grad_h_n", dhn);
  if (a.dcn) check_aligned(fn, "grad_c_n", dcn);
  py::array_t<T> dx({Tn, B, E}), dmemory({S, B, Hm}), dh0({L, B, H}), dc0, dfeed0({B, Ho});
  a.dx = dx.mutable_data();
  a.dmemory = dmemory.mutable_data();
  a.dh0 = dh0.mutable_data();
  a.dfeed0 = dfeed0.mutable_data();
  if (lstm) {
    dc0 = py::array_t<T>({L, B, H});
    a.dc0 = dc0.mutable_data();
  }
  {
    py::gil_scoped_release release;
    attn_decoder_backward<T>(ws, w, d, a, threads);
  }
  wsp.drop_refs();
  return py::make_tuple(dx, dmemory, dh0, lstm ? py::object(dc0) : py::object(py::none()), dfeed0);
}

}  // namespace

void bind_input_feed(py::module_& m) {
  py::class_<DecoderWorkspace, std::shared_ptr<DecoderWorkspace>>(
      m, "AttnDecoderWorkspace", "What an input-feeding decoder forward saved for its backward (opaque).")
      .def(py::init<>())
      .def_property_readonly("ready", &DecoderWorkspace::ready, "True after a forward whose backward has not run yet.")
      .def_property_readonly("dtype", &DecoderWorkspace::dtype)
      .def_readonly("cell", &DecoderWorkspace::cell);

  m.def(
      "attn_decoder_forward",
      [](const std::string& cell, const py::array& x, const py::object& memory, const py::object& memory_lengths,
         const py::object& w_ih, const py::object& w_hh, const py::object& b_ih, const py::object& b_hh,
         const py::object& attention, const py::object& h0, const py::object& c0, const py::object& feed0,
         const py::object& masks, const py::object& threads_obj, std::shared_ptr<DecoderWorkspace> workspace) {
        const int threads = checked_threads("attn_decoder_forward", threads_obj);
        return dispatch_float("attn_decoder_forward", "x", x, [&](auto zero) {
          return forward_impl<decltype(zero)>(cell, x, memory, memory_lengths, w_ih, w_hh, b_ih, b_hh, attention, h0,
                                              c0, feed0, masks, threads, workspace);
        });
      },
      py::arg("cell"), py::arg("x"), py::arg("memory"), py::arg("memory_lengths"), py::arg("w_ih"), py::arg("w_hh"),
      py::arg("b_ih"), py::arg("b_hh"), py::arg("attention"), py::arg("h0") = py::none(), py::arg("c0") = py::none(),
      py::arg("feed0") = py::none(), py::arg("masks") = py::none(), py::arg("threads") = 1,
      py::arg("workspace") = nullptr,
      R"doc(Luong's input-feeding attentional decoder over a whole target sequence, in one call.

x (T, B, E); memory (S, B, Hm); memory_lengths int64 (B,) in [1, S] or None (all S);
w_ih, w_hh: lists of L arrays, w_ih[0] (G*H, E + Ho) (x columns first, then the feed),
w_ih[l > 0] (G*H, H), w_hh[l] (G*H, H); b_ih, b_hh: lists of L arrays (G*H,) or None entries,
or None; attention: the tuple of rnncore.nn.Attention.weights_for_core() (its query size is H);
h0, c0 (L, B, H) or None (zeros; c0 lstm only); feed0 (B, Ho) or None (zeros); masks
(L-1, T, B, H) inter-layer dropout multipliers or None. Step t: layer 0 reads [x_t ; attn_h_{t-1}],
the top layer's h_t is the attention query, attn_h_t is the output and the next step's feed.
Returns (attn_h (T, B, Ho), alpha (T, B, S), h_n (L, B, H), c_n or None, workspace).)doc");

  m.def(
      "attn_decoder_backward",
      [](std::shared_ptr<DecoderWorkspace> ws, const py::object& grad_attn_h, const py::object& w_ih,
         const py::object& w_hh, const py::object& attention, const py::object& dw_ih, const py::object& dw_hh,
         const py::object& db_ih, const py::object& db_hh, const py::object& attention_grads,
         const py::object& grad_h_n, const py::object& grad_c_n, const py::object& grad_alpha,
         const py::object& threads_obj) {
        const char* fn = "attn_decoder_backward";
        const int threads = checked_threads(fn, threads_obj);
        if (!ws) throw py::type_error(std::string(fn) + ": workspace must be an AttnDecoderWorkspace, got None");
        ExclusiveCall exclusive(ws->busy, fn, "workspace (its decoder)");
        if (!ws->ready())
          throw py::value_error(std::string(fn) +
                                ": the workspace holds no forward to differentiate (run forward first; each forward "
                                "can be differentiated once)");
        if (ws->f64)
          return backward_impl<double>(*ws, grad_attn_h, w_ih, w_hh, attention, dw_ih, dw_hh, db_ih, db_hh,
                                       attention_grads, grad_h_n, grad_c_n, grad_alpha, threads);
        return backward_impl<float>(*ws, grad_attn_h, w_ih, w_hh, attention, dw_ih, dw_hh, db_ih, db_hh,
                                    attention_grads, grad_h_n, grad_c_n, grad_alpha, threads);
      },
      py::arg("workspace"), py::arg("grad_attn_h"), py::arg("w_ih"), py::arg("w_hh"), py::arg("attention"),
      py::arg("dw_ih"), py::arg("dw_hh"), py::arg("db_ih") = py::none(), py::arg("db_hh") = py::none(),
      py::arg("attention_grads") = py::none(), py::arg("grad_h_n") = py::none(), py::arg("grad_c_n") = py::none(),
      py::arg("grad_alpha") = py::none(), py::arg("threads") = 1,
      R"doc(Backpropagation through time for the last attn_decoder_forward run on `workspace`.

grad_attn_h (T, B, Ho) or None; w_ih, w_hh, attention: the forward's weights; dw_ih, dw_hh:
lists of L writable arrays shaped like the weights, added into; db_ih, db_hh: lists (entries
may be None) or None; attention_grads: the 7-tuple of attention weight gradients (added into)
or None; grad_h_n, grad_c_n (L, B, H) or None; grad_alpha (T, B, S) or None.
Returns (dx (T, B, E), dmemory (S, B, Hm), dh0 (L, B, H), dc0 or None, dfeed0 (B, Ho));
dmemory is exactly 0 at positions s >= memory_lengths[b].)doc");
}

}  // namespace rnncore
