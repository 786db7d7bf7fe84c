// _core.Seq2SeqDecoder: the seq2seq decoding loop (csrc/generate/seq2seq_decoder.h) for
// rnncore.sampling.seq2seq_decode.
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/bind_attention.h"
#include "generate/seq2seq_decoder.h"

namespace rnncore {

namespace {

// Takes the GIL between chunks of steps and runs Python's signal handlers (Ctrl-C raises
// KeyboardInterrupt); on an error it stops the loop and leaves the error set.
struct SignalPoll {
  bool interrupted = false;
  bool operator()() {
    py::gil_scoped_acquire gil;
    interrupted = PyErr_CheckSignals() != 0;
    return !interrupted;
  }
};

std::string str(index_t v) { return std::to_string(v); }

// An int (not a bool) from Python, as int64; TypeError naming `name` otherwise.
std::int64_t int_arg(const char* fn, const char* name, const py::handle& obj) {
  PyObject* o = obj.ptr();
  if (PyBool_Check(o) || !PyIndex_Check(o))
    throw py::type_error(std::string(fn) + ": " + name + " must be an int, got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(o));
  if (!value) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow == 0 && v == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow != 0)
    throw py::value_error(std::string(fn) + ": " + name + " = " + py::str(value).cast<std::string>() +
                          " does not fit in int64");
  return v;
}

void check_token(const char* fn, const char* name, std::int64_t t, index_t V) {
  if (t < 0 || t >= V)
    throw py::value_error(std::string(fn) + ": " + name + " = " + std::to_string(t) +
                          " is outside the vocabulary [0, " + str(V) + ")");
}

[[noreturn]] void raise_floating_point_error(const std::string& message) {
  PyErr_SetString(PyExc_FloatingPointError, message.c_str());
  throw py::error_already_set();
}

template <typename T>
py::array_t<T> copy_out(const T* src, std::vector<py::ssize_t> shape) {
  py::array_t<T> a(shape);
  std::copy(src, src + a.size(), a.mutable_data());
  return a;
}

class Decoder {
 public:
  Decoder(const std::string& cell, const py::object& embedding, const py::list& layers, const py::object& attention,
          bool input_feed, const py::object& w_out, const py::object& b_out, const py::object& threads_obj) {
    const char* fn = "Seq2SeqDecoder";
    const int threads = checked_threads(fn, threads_obj);
    const CellKind kind = parse_cell(fn, cell);
    dispatch_float(fn, "embedding", embedding, [&](auto zero) {
      using T = decltype(zero);
      auto dec = make<T>(kind, embedding, layers, attention, input_feed, w_out, b_out, threads);
      if constexpr (std::is_same<T, double>::value) d64_ = std::move(dec);
      else d32_ = std::move(dec);
    });
  }

  template <typename F>
  auto visit(F&& f) {
    if (d64_) return f(*d64_);
    return f(*d32_);
  }

  index_t V = 0, E = 0, H = 0, L = 0, Hm = 0;
  bool lstm = false, has_attention = false, input_feed = false;
  std::atomic<bool> busy{false};

  // The per-call sources, checked: memory (S, B, Hm) (None allowed without attention),
  // lengths (B,) int64 in [1, S] or None, h0/c0 (L, B, H) or None.
  template <typename T>
  Seq2SeqSources<T> sources(const char* fn, const py::object& memory, const py::object& lengths,
                            const py::object& h0, const py::object& c0, std::vector<py::array>& keep) {
    Seq2SeqSources<T> s;
    index_t B = -1, S = 0;
    if (!memory.is_none()) {
      py::array m = checked<T>(fn, "memory", memory, {-1, -1, has_attention ? Hm : -1});
      S = m.shape(0);
      B = m.shape(1);
      keep.push_back(m);
      s.memory = cptr<T>(m);
    } else if (has_attention) {
      throw py::type_error(std::string(fn) + ": memory must be a numpy array (S, B, " + str(Hm) +
                           ") for a decoder with attention, got None");
    } else if (!h0.is_none()) {
      py::array h = checked<T>(fn, "h0", h0, {L, -1, H});
      B = h.shape(1);
    } else {
      throw py::value_error(std::string(fn) + ": without attention and memory, h0 (L, B, H) gives the batch; "
                            "got neither memory nor h0");
    }
    if (B < 1) throw py::value_error(std::string(fn) + ": the batch must hold at least one source, got B = 0");
    if (has_attention && S < 1)
      throw py::value_error(std::string(fn) + ": memory must hold at least one source position (S >= 1), got S = 0");
    s.S = S;
    s.B = B;
    if (!lengths.is_none()) {
      if (memory.is_none())
        throw py::value_error(std::string(fn) + ": memory_lengths needs memory (the lengths are of its sources)");
      py::array len = checked<std::int64_t>(fn, "memory_lengths", lengths, {B});
      const std::int64_t* p = cptr<std::int64_t>(len);
      for (index_t b = 0; b < B; ++b)
        if (p[b] < 1 || p[b] > S)
          throw py::value_error(std::string(fn) + ": memory_lengths[" + str(b) + "] = " + std::to_string(p[b]) +
                                " is outside [1, S] = [1, " + str(S) + "]");
      keep.push_back(len);
      s.lengths = p;
    }
    if (!h0.is_none()) {
      py::array h = checked<T>(fn, "h0", h0, {L, B, H});
      keep.push_back(h);
      s.h0 = cptr<T>(h);
    }
    if (!c0.is_none()) {
      if (!lstm) throw py::value_error(std::string(fn) + ": c0 is only for lstm decoders");
      py::array c = checked<T>(fn, "c0", c0, {L, B, H});
      keep.push_back(c);
      s.c0 = cptr<T>(c);
    }
    return s;
  }

 private:
  template <typename T>
  std::unique_ptr<Seq2SeqDecoder<T>> make(CellKind kind, const py::object& embedding, const py::list& layers,
                                          const py::object& attention, bool feed, const py::object& w_out_obj,
                                          const py::object& b_out_obj, int threads) {
    const char* fn = "Seq2SeqDecoder";
    Seq2SeqWeights<T> w;
    w.kind = kind;
    const index_t G = gate_count(kind);
    py::array emb = checked<T>(fn, "embedding", embedding, {-1, -1});
    w.V = emb.shape(0);
    w.E = emb.shape(1);
    if (w.V < 1)
      throw py::value_error(std::string(fn) + ": the vocabulary must hold at least one token (embedding (V, E) "
                            "with V >= 1), got embedding of shape " + shape_str(emb));
    keep_.push_back(emb);
    w.embedding = cptr<T>(emb);
    if (layers.size() < 1 || layers.size() > 1024)
      throw py::value_error(std::string(fn) + ": layers must hold 1 to 1024 (w_ih, w_hh, b_ih, b_hh) tuples, got " +
                            std::to_string(layers.size()));
    w.L = static_cast<int>(layers.size());
    // The hidden size from layer 0's w_hh (G*H, H).
    {
      py::tuple t0 = py::cast<py::tuple>(layers[0]);
      if (t0.size() != 4) throw py::value_error(std::string(fn) + ": layers[0] must be (w_ih, w_hh, b_ih, b_hh)");
      py::array hh = checked<T>(fn, "layers[0].w_hh", t0[1], {-1, -1});
      w.H = hh.shape(1);
      if (w.H < 1) throw py::value_error(std::string(fn) + ": the hidden size must be >= 1, got layers[0].w_hh of "
                                         "shape " + shape_str(hh));
    }
    const index_t H = w.H;
    // Attention: None or the tuple rnncore.nn.Attention.weights_for_core() gives (parsed by
    // bindings/bind_attention.h, as every binding that runs attention does).
    if (!attention.is_none()) {
      std::vector<py::array> arrays;
      w.attn = attention_weights_from<T>(fn, attention, arrays);
      keep_.insert(keep_.end(), arrays.begin(), arrays.end());
      if (w.attn.Hq != H)
        throw py::value_error(std::string(fn) + ": the attention's query size Hq = " + str(w.attn.Hq) +
                              " must equal the decoder's hidden size H = " + str(H));
      w.has_attention = true;
    }
    if (feed && !w.has_attention)
      throw py::value_error(std::string(fn) + ": input_feed needs attention (it feeds the attentional state back)");
    w.input_feed = feed;
    for (int l = 0; l < w.L; ++l) {
      py::tuple t = py::cast<py::tuple>(layers[l]);
      const std::string idx = "layers[" + std::to_string(l) + "]";
      if (t.size() != 4) throw py::value_error(std::string(fn) + ": " + idx + " must be (w_ih, w_hh, b_ih, b_hh)");
      const index_t in = l == 0 ? w.E + w.feed_size() : H;
      py::array w_ih = checked<T>(fn, (idx + ".w_ih").c_str(), t[0], {G * H, in});
      py::array w_hh = checked<T>(fn, (idx + ".w_hh").c_str(), t[1], {G * H, H});
      keep_.push_back(w_ih);
      keep_.push_back(w_hh);
      w.w_ih.push_back(cptr<T>(w_ih));
      w.w_hh.push_back(cptr<T>(w_hh));
      py::array b_ih, b_hh;
      w.b_ih.push_back(optional_cptr<T>(fn, (idx + ".b_ih").c_str(), t[2], {G * H}, b_ih));
      w.b_hh.push_back(optional_cptr<T>(fn, (idx + ".b_hh").c_str(), t[3], {G * H}, b_hh));
      keep_.push_back(b_ih);
      keep_.push_back(b_hh);
    }
    py::array w_out = checked<T>(fn, "w_out", w_out_obj, {w.V, w.out_size()});
    py::array b_out;
    w.w_out = cptr<T>(w_out);
    w.b_out = optional_cptr<T>(fn, "b_out", b_out_obj, {w.V}, b_out);
    keep_.push_back(w_out);
    keep_.push_back(b_out);
    V = w.V;
    E = w.E;
    this->H = H;
    L = w.L;
    Hm = w.has_attention ? w.attn.Hm : 0;
    lstm = kind == CellKind::LSTM;
    has_attention = w.has_attention;
    input_feed = feed;
    std::unique_ptr<Seq2SeqDecoder<T>> dec;
    {
      py::gil_scoped_release release;  // packing touches no Python object
      dec = std::make_unique<Seq2SeqDecoder<T>>(w, threads);
    }
    return dec;
  }

  std::unique_ptr<Seq2SeqDecoder<float>> d32_;
  std::unique_ptr<Seq2SeqDecoder<double>> d64_;
  std::vector<py::array> keep_;
};

py::object decode(Decoder& d, const py::object& memory, const py::object& lengths, const py::object& h0,
                  const py::object& c0, const py::object& bos_obj, const py::object& eos_obj,
                  const py::object& max_len_obj, const std::string& method, const py::object& beam_width_obj,
                  const py::object& n_best_obj, double length_penalty, double temperature, const py::object& top_k_obj,
                  double top_p, const py::object& seed_obj, bool return_attention) {
  const char* fn = "Seq2SeqDecoder.decode";
  Seq2SeqOptions opt;
  if (method == "greedy") opt.method = DecodeMethod::Greedy;
  else if (method == "sample") opt.method = DecodeMethod::Sample;
  else if (method == "beam") opt.method = DecodeMethod::Beam;
  else throw py::value_error(std::string(fn) + ": method must be 'greedy', 'sample' or 'beam', got '" + method + "'");
  const std::int64_t bos = int_arg(fn, "bos", bos_obj), eos = int_arg(fn, "eos", eos_obj);
  check_token(fn, "bos", bos, d.V);
  check_token(fn, "eos", eos, d.V);
  const std::int64_t beam_width = int_arg(fn, "beam_width", beam_width_obj);
  const std::int64_t n_best = int_arg(fn, "n_best", n_best_obj);
  const std::int64_t top_k = int_arg(fn, "top_k", top_k_obj);
  if (beam_width < 1) throw py::value_error(std::string(fn) + ": beam_width must be >= 1, got " + std::to_string(beam_width));
  if (n_best < 1) throw py::value_error(std::string(fn) + ": n_best must be >= 1, got " + std::to_string(n_best));
  if (opt.method == DecodeMethod::Greedy && n_best != 1)
    throw py::value_error(std::string(fn) + ": n_best > 1 needs method 'beam' or 'sample' (greedy gives one "
                          "hypothesis per source), got n_best = " + std::to_string(n_best));
  if (!std::isfinite(length_penalty) || length_penalty < 0)
    throw py::value_error(std::string(fn) + ": length_penalty must be a finite number >= 0, got " +
                          std::to_string(length_penalty));
  if (!std::isfinite(temperature) || temperature < 0)
    throw py::value_error(std::string(fn) + ": temperature must be a finite number >= 0, got " +
                          std::to_string(temperature));
  if (top_k < 0) throw py::value_error(std::string(fn) + ": top_k must be >= 0, got " + std::to_string(top_k));
  if (!(top_p > 0.0 && top_p <= 1.0))
    throw py::value_error(std::string(fn) + ": top_p must be in (0, 1], got " + std::to_string(top_p));
  opt.beam_width = beam_width;
  opt.n_best = n_best;
  opt.alpha = length_penalty;
  opt.sampling.temperature = temperature;
  opt.sampling.top_k = top_k;
  opt.sampling.top_p = top_p;
  opt.return_attention = return_attention && d.has_attention;
  if (!seed_obj.is_none()) {
    PyObject* o = seed_obj.ptr();
    if (PyBool_Check(o) || !PyIndex_Check(o))
      throw py::type_error(std::string(fn) + ": seed must be an int or None");
    py::int_ v = py::reinterpret_steal<py::int_>(PyNumber_Index(o));
    if (!v) throw py::error_already_set();
    // Any integer: its low 64 bits (two's complement), so negative seeds work too.
    opt.seed = static_cast<std::uint64_t>(PyLong_AsUnsignedLongLongMask(v.ptr()));
    if (PyErr_Occurred()) throw py::error_already_set();
  }
  return d.visit([&](auto& dec) -> py::object {
    using T = typename std::remove_reference_t<decltype(dec)>::value_type;
    std::vector<py::array> keep;
    Seq2SeqSources<T> src = d.template sources<T>(fn, memory, lengths, h0, c0, keep);
    const index_t B = src.B;
    std::vector<std::int64_t> max_len(static_cast<std::size_t>(B));
    if (py::isinstance<py::array>(max_len_obj)) {
      py::array a = checked<std::int64_t>(fn, "max_len", max_len_obj, {B});
      std::copy(cptr<std::int64_t>(a), cptr<std::int64_t>(a) + B, max_len.begin());
    } else {
      std::fill(max_len.begin(), max_len.end(), int_arg(fn, "max_len", max_len_obj));
    }
    for (index_t b = 0; b < B; ++b)
      if (max_len[b] < 1 || max_len[b] > (std::int64_t(1) << 40))
        throw py::value_error(std::string(fn) + ": max_len must be >= 1 (and below 2**40), got " +
                              std::to_string(max_len[b]) + (B > 1 ? " for source " + str(b) : std::string()));
    src.max_len = max_len.data();
    src.bos = bos;
    src.eos = eos;
    const index_t k = opt.method == DecodeMethod::Beam ? beam_width : opt.method == DecodeMethod::Sample ? n_best : 1;
    const index_t rows = checked_mul(fn, "batch * beam_width", B, k);
    checked_mul(fn, "batch * beam_width * vocab_size", rows, d.V);
    checked_mul(fn, "batch * beam_width * num_layers * hidden_size", checked_mul(fn, "rows * layers", rows, d.L), d.H);
    checked_mul(fn, "beam_width * vocab_size * threads", checked_mul(fn, "beam_width * vocab_size", k, d.V), 256);
    ExclusiveCall exclusive(d.busy, fn, "decoder");
    std::vector<std::vector<Seq2SeqHypothesis<T>>> hyps;
    SignalPoll poll;
    index_t bad_source = -1, bad_step = -1;
    {
      py::gil_scoped_release release;
      hyps = dec.decode(src, opt, std::ref(poll));
      bad_source = dec.failed_source();
      bad_step = dec.failed_step();
    }
    if (poll.interrupted) throw py::error_already_set();
    if (bad_source >= 0)
      raise_floating_point_error(std::string(fn) + ": the logits of source " + str(bad_source) + " at step " +
                                 str(bad_step) + " are not finite (NaN or +inf, or all -inf): the model's "
                                 "parameters, the memory or the state hold NaN or infinite values");
    py::list out;
    for (const auto& per_source : hyps) {
      py::list l;
      for (const Seq2SeqHypothesis<T>& h : per_source) {
        const py::ssize_t n = static_cast<py::ssize_t>(h.hyp.tokens.size());
        py::array_t<std::int64_t> toks(n);
        std::copy(h.hyp.tokens.begin(), h.hyp.tokens.end(), toks.mutable_data());
        py::object att = py::none();
        if (opt.return_attention) att = copy_out<T>(h.attention.data(), {n, src.S});
        l.append(py::make_tuple(toks, h.hyp.score, h.hyp.normalized, h.hyp.finished, att));
      }
      out.append(l);
    }
    return out;
  });
}

py::object forced(Decoder& d, const py::object& memory, const py::object& lengths, const py::object& h0,
                  const py::object& c0, const py::object& tokens, bool return_attention) {
  const char* fn = "Seq2SeqDecoder.forced";
  return d.visit([&](auto& dec) -> py::object {
    using T = typename std::remove_reference_t<decltype(dec)>::value_type;
    std::vector<py::array> keep;
    Seq2SeqSources<T> src = d.template sources<T>(fn, memory, lengths, h0, c0, keep);
    const index_t B = src.B, S = src.S;
    py::array tok = checked<std::int64_t>(fn, "tokens", tokens, {-1, B});
    const index_t Tt = tok.shape(0);
    const std::int64_t* t = cptr<std::int64_t>(tok);
    for (index_t i = 0; i < Tt * B; ++i)
      if (t[i] < 0 || t[i] >= d.V)
        throw py::value_error(std::string(fn) + ": tokens[" + str(i / B) + ", " + str(i % B) + "] = " +
                              std::to_string(t[i]) + " is outside the vocabulary [0, " + str(d.V) + ")");
    checked_mul(fn, "T * batch * vocab_size", checked_mul(fn, "T * batch", Tt, B), d.V);
    const bool want_alpha = return_attention && d.has_attention;
    py::array_t<T> logits({Tt, B, d.V});
    py::object alpha_obj = py::none();
    T* alpha = nullptr;
    if (want_alpha) {
      py::array_t<T> a({Tt, B, S});
      alpha = a.mutable_data();
      alpha_obj = a;
    }
    T* pl = logits.mutable_data();
    ExclusiveCall exclusive(d.busy, fn, "decoder");
    SignalPoll poll;
    {
      py::gil_scoped_release release;
      dec.forced(pl, alpha, t, Tt, src, std::ref(poll));
    }
    if (poll.interrupted) throw py::error_already_set();
    return py::make_tuple(logits, alpha_obj);
  });
}

}  // namespace

void bind_seq2seq(py::module_& m) {
  py::class_<Decoder>(m, "Seq2SeqDecoder", R"doc(Decoding loop of an attentional encoder-decoder's decoder.

Seq2SeqDecoder(cell, embedding (V, E), layers [(w_ih, w_hh, b_ih|None, b_hh|None), ...],
               attention (None or a weights tuple), input_feed, w_out (V, O), b_out (V,)|None, threads).
layers[0].w_ih is (G*H, E + Ho) with input feeding ([x ; attn_h_prev], x columns first), else
(G*H, E); later layers (G*H, H). attention: rnncore.nn.Attention.weights_for_core()'s
(kind, w_in, w_q, b_q, w_k, v, w_out, b_out) with Hq = H; O = Ho with attention, else H. The arrays must stay unchanged while it lives.
One call at a time (another thread's call raises RuntimeError); KeyboardInterrupt on Ctrl-C.)doc")
      .def(py::init<const std::string&, const py::object&, const py::list&, const py::object&, bool, const py::object&,
                    const py::object&, const py::object&>(),
           py::arg("cell"), py::arg("embedding"), py::arg("layers"), py::arg("attention"), py::arg("input_feed"),
           py::arg("w_out"), py::arg("b_out"), py::arg("threads"))
      .def_readonly("vocab_size", &Decoder::V)
      .def_readonly("hidden_size", &Decoder::H)
      .def_readonly("num_layers", &Decoder::L)
      .def_readonly("memory_size", &Decoder::Hm)
      .def_readonly("has_attention", &Decoder::has_attention)
      .def_readonly("input_feed", &Decoder::input_feed)
      .def("decode", &decode, py::arg("memory"), py::arg("memory_lengths"), py::arg("h0"), py::arg("c0"),
           py::arg("bos"), py::arg("eos"), py::arg("max_len"), py::arg("method") = "greedy", py::arg("beam_width") = 5,
           py::arg("n_best") = 1, py::arg("length_penalty") = 0.0, py::arg("temperature") = 1.0,
           py::arg("top_k") = 0, py::arg("top_p") = 1.0, py::arg("seed") = py::none(),
           py::arg("return_attention") = false,
           "Decode every source: memory (S, B, Hm) (None without attention: then h0 gives B), memory_lengths "
           "(B,) int64 in [1, S] or None, h0/c0 (L, B, H) or None (zeros), max_len an int >= 1 or (B,) int64. "
           "Returns, per source, [(tokens int64 (n,), score, normalized, finished, attention (n, S) or None), ...] "
           "best first.")
      .def("forced", &forced, py::arg("memory"), py::arg("memory_lengths"), py::arg("h0"), py::arg("c0"),
           py::arg("tokens"), py::arg("return_attention") = false,
           "Teacher forcing: feed tokens (T, B) int64 step by step; returns (logits (T, B, V), alpha (T, B, S) or "
           "None).");
}

}  // namespace rnncore
