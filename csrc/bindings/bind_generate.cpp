// _core.LMDecoder: the language-model decoding loop (csrc/generate) for rnncore.sampling.
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "generate/decoder.h"

namespace rnncore {

namespace {

// A weight's format: a (q, scale) tuple is int8, a uint16 array bf16 bits, anything else float
// (each checked where it is read).
WeightFormat weight_format(const py::handle& obj) {
  if (py::isinstance<py::tuple>(obj) && py::len(obj) == 2) return WeightFormat::int8;
  if (has_dtype<std::uint16_t>(obj)) return WeightFormat::bf16;
  return WeightFormat::f32;
}

const char* format_name(WeightFormat f) {
  return f == WeightFormat::int8 ? "an int8 weight (q, scale)" : f == WeightFormat::bf16 ? "bf16 (a uint16 array)"
                                                                                         : "a float array";
}

// `obj` None or an iterable of token ids (Python or numpy integers, not bools) in [0, V).
std::vector<std::int64_t> token_list(const char* fn, const char* name, const py::object& obj, index_t V) {
  std::vector<std::int64_t> out = int64_list(fn, name, obj);
  for (const std::int64_t t : out)
    if (t < 0 || t >= V)
      throw py::value_error(std::string(fn) + ": " + name + " must be token ids in [0, " + std::to_string(V) +
                            "), got " + std::to_string(t));
  return out;
}

// `obj` must be an int64 array of shape `dims` (checked()) holding token ids in [0, V).
py::array checked_tokens(const char* fn, const py::handle& obj, const std::vector<index_t>& dims, index_t V) {
  py::array a = checked<std::int64_t>(fn, "tokens", obj, dims);
  const std::int64_t* t = cptr<std::int64_t>(a);
  const index_t cols = a.ndim() == 2 ? a.shape(1) : 1;
  for (index_t i = 0; i < static_cast<index_t>(a.size()); ++i) {
    if (t[i] < 0 || t[i] >= V) {
      const std::string at = a.ndim() == 2 ? std::to_string(i / cols) + ", " + std::to_string(i % cols)
                                           : std::to_string(i);
      throw py::value_error(std::string(fn) + ": tokens[" + at + "] = " + std::to_string(t[i]) +
                            " is outside the vocabulary [0, " + std::to_string(V) + ")");
    }
  }
  return a;
}

[[noreturn]] void raise_floating_point_error(const std::string& message) {
  PyErr_SetString(PyExc_FloatingPointError, message.c_str());
  throw py::error_already_set();
}

[[noreturn]] void raise_non_finite_logits(const char* fn, index_t stream, index_t step) {
  raise_floating_point_error(std::string(fn) + ": the logits of stream " + std::to_string(stream) + " at step " +
                             std::to_string(step) + " are not finite (NaN or +inf, or all -inf): the model's "
                             "parameters or its state hold NaN or infinite values");
}

// The decoder's Poll while the GIL is released: takes the GIL and runs Python's signal
// handlers (Ctrl-C's raises KeyboardInterrupt); on an error it stops the loop and leaves the
// error set, for the caller to raise once the loop has returned.
struct SignalPoll {
  bool interrupted = false;
  bool operator()() {
    py::gil_scoped_acquire gil;
    interrupted = PyErr_CheckSignals() != 0;
    return !interrupted;
  }
};

// The decoder for one dtype, with the arrays it points into kept alive. One call at a time
// (`busy`): every method that reads or writes the decoding state holds an ExclusiveCall.
class Decoder {
 public:
  Decoder(const std::string& cell, const py::object& embedding, const py::list& layers, const py::object& w_out,
          const py::object& b_out, index_t batch, const py::object& threads_obj) {
    const char* fn = "LMDecoder";
    if (batch < 1) throw py::value_error(std::string(fn) + ": batch must be >= 1, got " + std::to_string(batch));
    const int threads = checked_threads(fn, threads_obj);
    const CellKind kind = parse_cell(fn, cell);
    dispatch_float(fn, "embedding", embedding, [&](auto zero) {
      using T = decltype(zero);
      auto dec = make<T>(kind, embedding, layers, w_out, b_out, batch, threads);
      if constexpr (std::is_same<T, double>::value) d64_ = std::move(dec);
      else d32_ = std::move(dec);
    });
  }

  template <typename F>
  auto visit(F&& f) {
    if (d64_) return f(*d64_);
    return f(*d32_);
  }

  index_t V = 0, H = 0, R = 0, L = 0, B = 0;  // R: the width of h (proj_size P with projections, else H)
  bool lstm = false;
  std::atomic<bool> busy{false};

 private:
  template <typename T>
  std::unique_ptr<LMDecoder<T>> make(CellKind kind, const py::object& embedding, const py::list& layers,
                                     const py::object& w_out_obj, const py::object& b_out_obj, index_t batch,
                                     int threads) {
    const char* fn = "LMDecoder";
    LMWeights<T> w;
    w.kind = kind;
    const index_t G = gate_count(w.kind);
    py::array emb = checked<T>(fn, "embedding", embedding, {-1, -1});
    w.V = emb.shape(0);
    w.E = emb.shape(1);
    if (w.V < 1)
      throw py::value_error(std::string(fn) + ": the vocabulary must hold at least one token (embedding (V, E) with "
                            "V >= 1), got embedding of shape " + shape_str(emb));
    if (layers.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()))
      throw py::value_error(std::string(fn) + ": too many layers (" + std::to_string(layers.size()) + ")");
    w.L = static_cast<int>(layers.size());
    if (w.L < 1) throw py::value_error("LMDecoder: layers must hold at least one (w_ih, w_hh, b_ih, b_hh) tuple");
    keep_.push_back(emb);
    w.embedding = cptr<T>(emb);
    // Weight matrices: float arrays of the decoder's dtype or, for a float32 decoder, every one
    // an int8 weight (q int8 (rows, cols), scale float32 (rows,)) or every one bf16 bits (a uint16
    // (rows, cols) array): w_out decides which.
    w.format = weight_format(w_out_obj);
    if (w.format != WeightFormat::f32 && !std::is_same<T, float>::value)
      throw py::type_error(std::string(fn) + ": " + (w.format == WeightFormat::int8 ? "int8" : "bf16") +
                           " weights decode in float32; the "
                           "embedding must be float32, got float64");
    struct Mat {
      const T* f = nullptr;
      LowpWeight q;
      index_t rows = 0, cols = 0;
    };
    const auto matrix = [&](const std::string& name, const py::handle& obj, const std::vector<index_t>& dims) {
      Mat m;
      const WeightFormat f = weight_format(obj);
      if (f != w.format)
        throw py::type_error(std::string(fn) + ": " + name + " must be " + format_name(w.format) +
                             " like w_out, got " + format_name(f));
      if (f == WeightFormat::int8) {
        py::tuple pair = py::reinterpret_borrow<py::tuple>(obj);
        py::array q = checked<std::int8_t>(fn, (name + "[0] (q)").c_str(), pair[0], dims);
        py::array sc = checked<float>(fn, (name + "[1] (scale)").c_str(), pair[1], {q.shape(0)});
        keep_.push_back(q);
        keep_.push_back(sc);
        m.q.data = q.data();
        m.q.scale = cptr<float>(sc);
        m.rows = q.shape(0);
        m.cols = q.shape(1);
      } else {
        py::array a = f == WeightFormat::bf16 ? checked<std::uint16_t>(fn, name.c_str(), obj, dims)
                                              : checked<T>(fn, name.c_str(), obj, dims);
        keep_.push_back(a);
        if (f == WeightFormat::bf16) m.q.data = a.data();
        else m.f = cptr<T>(a);
        m.rows = a.shape(0);
        m.cols = a.shape(1);
      }
      return m;
    };
    for (int l = 0; l < w.L; ++l) {
      py::tuple t = py::cast<py::tuple>(layers[l]);
      if (t.size() != 4 && t.size() != 5)
        throw py::value_error("LMDecoder: layers[" + std::to_string(l) +
                              "] must be (w_ih, w_hh, b_ih, b_hh) or, for an lstm with projections, "
                              "(w_ih, w_hh, b_ih, b_hh, w_hr)");
      const std::string idx = "layers[" + std::to_string(l) + "]";
      const bool has_hr = t.size() == 5 && !t[4].is_none();
      if (l == 0) {
        const Mat hh = matrix(idx + ".w_hh", t[1], {-1, -1});
        w.H = hh.cols;
        if (has_hr) {  // projections: w_hr (P, H) gives both sizes, as in recurrent_forward
          if (kind != CellKind::LSTM)
            throw py::value_error(std::string(fn) + ": w_hr (projections) is only for lstm cells, got one for " +
                                  cell_kind_name(kind));
          const Mat hr = matrix(idx + ".w_hr", t[4], {-1, -1});
          w.P = hr.rows;
          w.H = hr.cols;
          if (w.P < 1 || w.P >= w.H)
            throw py::value_error(std::string(fn) + ": " + idx + ".w_hr must have shape (P, H) with 0 < P < H "
                                  "(proj_size below hidden_size), got (" + std::to_string(hr.rows) + ", " +
                                  std::to_string(hr.cols) + ")");
        }
      } else if (has_hr != (w.P > 0)) {
        throw py::value_error(std::string(fn) + ": " + idx + (has_hr ? " has" : " has no") +
                              " w_hr but layers[0] " + (has_hr ? "has none" : "has one") +
                              ": every layer must be projected alike (one proj_size)");
      }
      const index_t H = w.H, R = w.P > 0 ? w.P : H, in = l == 0 ? w.E : R;
      const Mat hh = matrix(idx + ".w_hh", t[1], {G * H, R});
      if (has_hr) {
        const Mat hr = matrix(idx + ".w_hr", t[4], {w.P, H});
        w.w_hr.push_back(hr.f);
        w.q_hr.push_back(hr.q);
      }
      const Mat ih = matrix(idx + ".w_ih", t[0], {G * H, in});
      w.w_ih.push_back(ih.f);
      w.w_hh.push_back(hh.f);
      w.q_ih.push_back(ih.q);
      w.q_hh.push_back(hh.q);
      py::array b_ih, b_hh;
      w.b_ih.push_back(optional_cptr<T>(fn, (idx + ".b_ih").c_str(), t[2], {G * H}, b_ih));
      w.b_hh.push_back(optional_cptr<T>(fn, (idx + ".b_hh").c_str(), t[3], {G * H}, b_hh));
      keep_.push_back(b_ih);
      keep_.push_back(b_hh);
    }
    const index_t R = w.P > 0 ? w.P : w.H;
    const Mat out = matrix("w_out", w_out_obj, {w.V, R});
    py::array b_out;
    w.w_out = out.f;
    w.q_out = out.q;
    w.b_out = optional_cptr<T>(fn, "b_out", b_out_obj, {w.V}, b_out);
    keep_.push_back(b_out);
    // Buffers of batch-many rows: check the sizes before anything is allocated (the batch is
    // any int; B * V could wrap around to a small buffer).
    checked_mul(fn, "batch * vocab_size", batch, w.V);
    checked_mul(fn, "batch * embedding_dim", batch, w.E);
    checked_mul(fn, "batch * num_layers * hidden_size", checked_mul(fn, "batch * num_layers", batch, w.L), w.H);
    checked_mul(fn, "batch * gates * hidden_size", batch, G * w.H);
    V = w.V;
    H = w.H;
    this->R = R;
    L = w.L;
    B = batch;
    lstm = w.kind == CellKind::LSTM;
    std::unique_ptr<LMDecoder<T>> dec;
    {
      py::gil_scoped_release release;  // packing the weights touches no Python object
      dec = std::make_unique<LMDecoder<T>>(w, batch, threads);
    }
    return dec;
  }

  std::unique_ptr<LMDecoder<float>> d32_;
  std::unique_ptr<LMDecoder<double>> d64_;
  std::vector<py::array> keep_;
};

template <typename T>
py::array_t<T> copy_out(const T* src, std::vector<py::ssize_t> shape) {
  py::array_t<T> a(shape);
  std::copy(src, src + a.size(), a.mutable_data());
  return a;
}

}  // namespace

void bind_generate(py::module_& m) {
  py::class_<Decoder>(m, "LMDecoder", R"doc(Decoding loop of an Embedding -> RNN layers -> Linear language model.

LMDecoder(cell, embedding (V, E), layers [(w_ih, w_hh, b_ih|None, b_hh|None), ...], w_out (V, H),
          b_out (V,)|None, batch, threads). The arrays must stay unchanged while it lives;
their packed copies are made once here. V must be >= 1.

An lstm with projections (PyTorch's proj_size P): each layer is (w_ih, w_hh, b_ih, b_hh, w_hr)
with w_hr (P, H), 0 < P < H, the same P for every layer; then w_hh is (G*H, P), a layer after
the first reads P features, w_out is (V, P), and the state h is (L, B, P) (c stays (L, B, H)).

One call at a time: a method called while another thread runs one on the same decoder
raises RuntimeError. sample() and beam_search() raise FloatingPointError naming the stream
and step whose logits are not finite, and KeyboardInterrupt on Ctrl-C (checked every
millisecond or so of work; the decoder then holds the state after the last step run).)doc")
      .def(py::init<const std::string&, const py::object&, const py::list&, const py::object&, const py::object&,
                    index_t, const py::object&>(),
           py::arg("cell"), py::arg("embedding"), py::arg("layers"), py::arg("w_out"), py::arg("b_out"),
           py::arg("batch"), py::arg("threads"))
      .def_readonly("vocab_size", &Decoder::V)
      .def_readonly("batch", &Decoder::B)
      .def(
          "get_state",
          [](Decoder& d) {
            ExclusiveCall exclusive(d.busy, "LMDecoder.get_state", "decoder");
            return d.visit([&](auto& dec) -> py::tuple {
              using T = std::remove_reference_t<decltype(*dec.h())>;
              py::object c = py::none();
              if (d.lstm) c = copy_out<T>(dec.c(), {d.L, d.B, d.H});
              return py::make_tuple(copy_out<T>(dec.h(), {d.L, d.B, d.R}), c);
            });
          },
          "The state (h, c or None), each (L, B, H) (with projections h is (L, B, P)), before the next input "
          "token is fed.")
      .def(
          "set_state",
          [](Decoder& d, const py::object& h, const py::object& c) {
            ExclusiveCall exclusive(d.busy, "LMDecoder.set_state", "decoder");
            d.visit([&](auto& dec) {
              using T = std::remove_reference_t<decltype(*dec.h())>;
              py::array ha = checked<T>("LMDecoder.set_state", "h", h, {d.L, d.B, d.R});
              py::array ca;
              if (d.lstm) ca = checked<T>("LMDecoder.set_state", "c", c, {d.L, d.B, d.H});
              else if (!c.is_none()) throw py::value_error("LMDecoder.set_state: c is only for lstm decoders");
              std::copy(cptr<T>(ha), cptr<T>(ha) + ha.size(), dec.h());
              if (d.lstm) std::copy(cptr<T>(ca), cptr<T>(ca) + ca.size(), dec.c());
            });
          },
          py::arg("h"), py::arg("c") = py::none())
      .def(
          "set_next_tokens",
          [](Decoder& d, const py::object& tokens) {
            ExclusiveCall exclusive(d.busy, "LMDecoder.set_next_tokens", "decoder");
            py::array a = checked_tokens("LMDecoder.set_next_tokens", tokens, {d.B}, d.V);
            const std::int64_t* t = cptr<std::int64_t>(a);
            d.visit([&](auto& dec) { std::copy(t, t + d.B, dec.next_token()); });
          },
          py::arg("tokens"), "The next input token of each stream, int64 (B,).")
      .def(
          "mark_seen",
          [](Decoder& d, const py::object& tokens) {
            ExclusiveCall exclusive(d.busy, "LMDecoder.mark_seen", "decoder");
            py::array a = checked_tokens("LMDecoder.mark_seen", tokens, {d.B, -1}, d.V);
            d.visit([&](auto& dec) { dec.mark_seen(cptr<std::int64_t>(a), a.shape(1)); });
          },
          py::arg("tokens"), "Mark tokens (B, P) as seen by each stream (for the repetition penalty).")
      .def(
          "seed",
          [](Decoder& d, std::uint64_t seed) {
            ExclusiveCall exclusive(d.busy, "LMDecoder.seed", "decoder");
            d.visit([&](auto& dec) { dec.seed(seed); });
          },
          py::arg("seed"), "Seed every stream's generator: stream b draws from (seed, b) alone.")
      .def_property_readonly("done",
                             [](Decoder& d) {
                               ExclusiveCall exclusive(d.busy, "LMDecoder.done", "decoder");
                               return d.visit([&](auto& dec) {
                                 py::array_t<bool> a({d.B});
                                 for (index_t b = 0; b < d.B; ++b) a.mutable_data()[b] = dec.done()[b] != 0;
                                 return a;
                               });
                             })
      .def(
          "sample",
          [](Decoder& d, index_t n, double temperature, index_t top_k, double top_p, double repetition_penalty,
             const py::object& stop_tokens) {
            const char* fn = "LMDecoder.sample";
            if (n < 0) throw py::value_error(std::string(fn) + ": n must be >= 0, got " + std::to_string(n));
            if (!(temperature >= 0.0) || !std::isfinite(temperature))
              throw py::value_error(std::string(fn) + ": temperature must be a finite number >= 0, got " +
                                    std::to_string(temperature));
            if (top_k < 0) throw py::value_error(std::string(fn) + ": top_k must be >= 0, got " + std::to_string(top_k));
            if (!(top_p > 0.0 && top_p <= 1.0))
              throw py::value_error(std::string(fn) + ": top_p must be in (0, 1], got " + std::to_string(top_p));
            if (!(repetition_penalty > 0.0) || !std::isfinite(repetition_penalty))
              throw py::value_error(std::string(fn) + ": repetition_penalty must be > 0, got " +
                                    std::to_string(repetition_penalty));
            const std::vector<std::int64_t> stop = token_list(fn, "stop_tokens", stop_tokens, d.V);
            SamplingOptions opt;
            opt.temperature = temperature;
            opt.top_k = top_k;
            opt.top_p = top_p;
            opt.repetition_penalty = repetition_penalty;
            py::array_t<std::int64_t> out({d.B, n});
            std::int64_t* po = out.mutable_data();
            ExclusiveCall exclusive(d.busy, fn, "decoder");
            index_t steps = 0, bad_stream = -1, bad_step = -1;
            SignalPoll poll;
            {
              py::gil_scoped_release release;
              steps = d.visit([&](auto& dec) {
                const index_t r =
                    dec.sample(po, n, opt, stop.data(), static_cast<index_t>(stop.size()), std::ref(poll));
                bad_stream = dec.failed_stream();
                bad_step = dec.failed_step();
                return r;
              });
            }
            if (poll.interrupted) throw py::error_already_set();
            if (bad_stream >= 0) raise_non_finite_logits(fn, bad_stream, bad_step);
            return py::make_tuple(out, steps);
          },
          py::arg("n"), py::arg("temperature") = 1.0, py::arg("top_k") = 0, py::arg("top_p") = 1.0,
          py::arg("repetition_penalty") = 1.0, py::arg("stop_tokens") = py::none(),
          "Run up to n steps; returns (tokens (B, n) with -1 after a stream is done, steps run). Steps count "
          "from the decoder's first sample() in FloatingPointError's message.")
      .def(
          "teacher_force",
          [](Decoder& d, const py::object& tokens, const py::object& targets, bool return_logits, bool by_layer) {
            const char* fn = "LMDecoder.teacher_force";
            py::array tok = checked_tokens(fn, tokens, {d.B, -1}, d.V);
            const index_t n = tok.shape(1);
            const bool has_targets = !targets.is_none();
            py::array tgt;  // (a default py::array is an empty array, not a null handle)
            if (has_targets) tgt = checked_tokens(fn, targets, {d.B, n}, d.V);
            if (return_logits) checked_mul(fn, "steps * batch * vocab_size", checked_mul(fn, "steps * batch", n, d.B), d.V);
            py::object logprob = py::none(), logits = py::none();
            double* lp = nullptr;
            if (has_targets) {
              py::array_t<double> a({d.B, n});
              lp = a.mutable_data();
              logprob = a;
            }
            ExclusiveCall exclusive(d.busy, fn, "decoder");
            index_t steps = 0, bad_stream = -1, bad_step = -1;
            SignalPoll poll;
            d.visit([&](auto& dec) {
              using T = std::remove_reference_t<decltype(*dec.h())>;
              T* po = nullptr;
              if (return_logits) {
                py::array_t<T> a({n, d.B, d.V});
                po = a.mutable_data();
                logits = a;
              }
              py::gil_scoped_release release;
              const std::int64_t* tp = has_targets ? cptr<std::int64_t>(tgt) : nullptr;
              steps = by_layer && (tp != nullptr || po != nullptr)
                          ? dec.teacher_force_layers(cptr<std::int64_t>(tok), n, tp, lp, po, std::ref(poll))
                          : dec.teacher_force(cptr<std::int64_t>(tok), n, tp, lp, po, std::ref(poll));
              bad_stream = dec.failed_stream();
              bad_step = dec.failed_step();
            });
            if (poll.interrupted) throw py::error_already_set();
            if (bad_stream >= 0) raise_non_finite_logits(fn, bad_stream, bad_step);
            return py::make_tuple(logprob, logits, steps);
          },
          py::arg("tokens"), py::arg("targets") = py::none(), py::arg("return_logits") = false,
          py::arg("by_layer") = false,
          "Teacher forcing: feed tokens (B, n) one step at a time from the current state. Returns (logprob, "
          "logits, steps): logprob (B, n) float64, log p(targets[b, s]) after step s, when targets (B, n) are "
          "given; logits (n, B, V) when return_logits; with neither, the output layer is skipped (reading a "
          "prime). The next input tokens are left as the last ones fed. by_layer: the same values computed "
          "layer by layer over chunks of steps (each layer's input products for a chunk at once); a non-finite "
          "logit then still raises, but after all n steps.")
      .def("step_logits",
           [](Decoder& d) {
             ExclusiveCall exclusive(d.busy, "LMDecoder.step_logits", "decoder");
             return d.visit([&](auto& dec) -> py::array {
               using T = std::remove_reference_t<decltype(*dec.h())>;
               py::array_t<T> out({d.B, d.V});
               T* po = out.mutable_data();
               {
                 py::gil_scoped_release release;  // no Python object is touched until it ends
                 dec.step_logits(po);
               }
               return out;
             });
           },
           "Feed the next tokens and return the logits (B, V) without choosing (advances the state).")
      .def(
          "beam_search",
          [](Decoder& d, index_t max_len, double alpha, index_t n_best, const py::object& stop_tokens) {
            const char* fn = "LMDecoder.beam_search";
            if (max_len < 1) throw py::value_error(std::string(fn) + ": max_len must be >= 1, got " + std::to_string(max_len));
            if (n_best < 1) throw py::value_error(std::string(fn) + ": n_best must be >= 1, got " + std::to_string(n_best));
            if (!std::isfinite(alpha) || alpha < 0)
              throw py::value_error(std::string(fn) + ": alpha must be a finite number >= 0, got " + std::to_string(alpha));
            const std::vector<std::int64_t> stop = token_list(fn, "stop_tokens", stop_tokens, d.V);
            ExclusiveCall exclusive(d.busy, fn, "decoder");
            std::vector<Hypothesis> hyps;
            index_t bad_beam = -1, bad_step = -1;
            SignalPoll poll;
            {
              py::gil_scoped_release release;
              hyps = d.visit([&](auto& dec) {
                auto r = dec.beam_search(max_len, alpha, n_best, stop.data(), static_cast<index_t>(stop.size()),
                                         std::ref(poll));
                bad_beam = dec.failed_stream();
                bad_step = dec.failed_step();
                return r;
              });
            }
            if (poll.interrupted) throw py::error_already_set();
            if (bad_beam >= 0)
              raise_floating_point_error(std::string(fn) + ": the logits of beam " + std::to_string(bad_beam) +
                                         " at step " + std::to_string(bad_step) +
                                         " are not finite (NaN or +inf, or all -inf): the model's parameters or "
                                         "its state hold NaN or infinite values");
            py::list out;
            for (const Hypothesis& h : hyps) {
              py::array_t<std::int64_t> toks(static_cast<py::ssize_t>(h.tokens.size()));
              std::copy(h.tokens.begin(), h.tokens.end(), toks.mutable_data());
              out.append(py::make_tuple(toks, h.score, h.normalized, h.finished));
            }
            return out;
          },
          py::arg("max_len"), py::arg("alpha") = 0.0, py::arg("n_best") = 1, py::arg("stop_tokens") = py::none(),
          "Beam search (width = batch) from stream 0's state and next token; returns [(tokens, score, "
          "normalized score, finished), ...] best first.");
}

}  // namespace rnncore
