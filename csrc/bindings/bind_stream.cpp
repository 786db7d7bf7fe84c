// _core.RecurrentStream: a stacked unidirectional network fed chunk by chunk (recurrent/stream.h).
#include <atomic>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "bindings/arrays.h"
#include "recurrent/stream.h"

namespace rnncore {

namespace {

// The weights of each layer as (w_ih, w_hh, b_ih, b_hh, w_hr) tuples, checked against the
// sizes the first layer's arrays give; the arrays are kept in `keep` for the call.
struct LayerSizes {
  index_t G = 0, H = 0, P = 0, R = 0;
  std::vector<index_t> in_sizes;
};

template <typename T>
std::vector<StreamLayerWeights<T>> checked_weights(const char* fn, CellKind kind, const py::handle& obj,
                                                   LayerSizes& sz, bool sizes_known, std::vector<py::array>& keep) {
  if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj))
    throw py::type_error(std::string(fn) + ": weights must be a list of (w_ih, w_hh, b_ih, b_hh, w_hr) tuples, one "
                         "per layer, got " + py::str(py::type::of(obj)).cast<std::string>());
  py::sequence layers = py::reinterpret_borrow<py::sequence>(obj);
  const index_t L = static_cast<index_t>(py::len(layers));
  if (L < 1) throw py::value_error(std::string(fn) + ": weights must hold at least one layer, got none");
  if (sizes_known && L != static_cast<index_t>(sz.in_sizes.size()))
    throw py::value_error(std::string(fn) + ": weights must hold " + std::to_string(sz.in_sizes.size()) +
                          " layers, got " + std::to_string(L));
  const index_t G = gate_count(kind);
  std::vector<StreamLayerWeights<T>> out;
  for (index_t l = 0; l < L; ++l) {
    py::handle item = layers[l];
    if (!py::isinstance<py::tuple>(item) || py::len(item) != 5)
      throw py::type_error(std::string(fn) + ": weights[" + std::to_string(l) +
                           "] must be a tuple (w_ih, w_hh, b_ih, b_hh, w_hr)");
    py::tuple t = py::reinterpret_borrow<py::tuple>(item);
    const std::string at = "weights[" + std::to_string(l) + "]";
    const std::string n_ih = at + ".w_ih", n_hh = at + ".w_hh", n_bi = at + ".b_ih", n_bh = at + ".b_hh",
                      n_hr = at + ".w_hr";
    if (!sizes_known && l == 0) {
      py::array w_hh = checked<T>(fn, n_hh.c_str(), t[1], {-1, -1});
      if (t[4].is_none()) {
        sz.H = w_hh.shape(1);
        sz.P = 0;
      } else {
        if (kind != CellKind::LSTM)
          throw py::value_error(std::string(fn) + ": w_hr (projections) is only for lstm cells");
        py::array w_hr = checked<T>(fn, n_hr.c_str(), t[4], {-1, -1});
        sz.P = w_hr.shape(0);
        sz.H = w_hr.shape(1);
        if (sz.P < 1 || sz.P >= sz.H)
          throw py::value_error(std::string(fn) + ": " + n_hr + " must have shape (P, H) with 0 < P < H, got " +
                                shape_str(w_hr));
      }
      if (sz.H < 1) throw py::value_error(std::string(fn) + ": " + n_hh + " gives hidden_size 0");
      sz.G = G;
      sz.R = sz.P > 0 ? sz.P : sz.H;
    }
    if (!sizes_known) {
      py::array w_ih = checked<T>(fn, n_ih.c_str(), t[0], {G * sz.H, -1});
      sz.in_sizes.push_back(w_ih.shape(1));
      if (l > 0 && w_ih.shape(1) != sz.R)
        throw py::value_error(std::string(fn) + ": " + n_ih + " must have shape (G*H, R) = (" +
                              std::to_string(G * sz.H) + ", " + std::to_string(sz.R) + "), got " + shape_str(w_ih));
    }
    StreamLayerWeights<T> w;
    keep.push_back(checked<T>(fn, n_ih.c_str(), t[0], {G * sz.H, sz.in_sizes[l]}));
    w.w_ih = cptr<T>(keep.back());
    keep.push_back(checked<T>(fn, n_hh.c_str(), t[1], {G * sz.H, sz.R}));
    w.w_hh = cptr<T>(keep.back());
    py::array b;
    w.b_ih = optional_cptr<T>(fn, n_bi.c_str(), t[2], {G * sz.H}, b);
    keep.push_back(b);
    w.b_hh = optional_cptr<T>(fn, n_bh.c_str(), t[3], {G * sz.H}, b);
    keep.push_back(b);
    if (sz.P > 0) {
      if (t[4].is_none()) throw py::value_error(std::string(fn) + ": " + n_hr + " is required (projections)");
      keep.push_back(checked<T>(fn, n_hr.c_str(), t[4], {sz.P, sz.H}));
      w.w_hr = cptr<T>(keep.back());
    } else if (!t[4].is_none()) {
      throw py::value_error(std::string(fn) + ": " + n_hr + " must be None (layer 0 has no projection)");
    }
    out.push_back(w);
  }
  return out;
}

// True when the memory of a and b overlaps.
bool overlaps(const py::array& a, const py::array& b) {
  const char* a0 = static_cast<const char*>(a.data());
  const char* b0 = static_cast<const char*>(b.data());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

class StreamHandle {
  template <typename T>
  struct Tagged : Stream<T> {
    using value_type = T;
    using Stream<T>::Stream;
  };
  std::unique_ptr<Tagged<float>> f32_;
  std::unique_ptr<Tagged<double>> f64_;
  // f(stream) on the stream of this handle's dtype (both instantiations return the same type).
  template <typename F>
  auto with(F&& f) -> decltype(f(*f32_)) {
    if (f64_) return f(*f64_);
    return f(*f32_);
  }

 public:
  StreamHandle(const std::string& cell, const py::object& weights, index_t batch, index_t capacity,
               const py::object& threads_obj, bool bf16) {
    const char* fn = "RecurrentStream";
    kind_ = parse_cell(fn, cell);
    const int threads = checked_threads(fn, threads_obj);
    if (batch < 1) throw py::value_error(std::string(fn) + ": batch_size must be >= 1, got " + std::to_string(batch));
    if (capacity < 1) throw py::value_error(std::string(fn) + ": capacity must be >= 1, got " + std::to_string(capacity));
    py::object first = py::none();
    if (py::isinstance<py::sequence>(weights) && !py::isinstance<py::str>(weights) && py::len(weights) > 0 &&
        py::isinstance<py::tuple>(weights[py::int_(0)]) && py::len(weights[py::int_(0)]) == 5)
      first = weights[py::int_(0)].cast<py::tuple>()[0];
    dispatch_float(fn, "weights[0].w_ih", first, [&](auto zero) {
      using T = decltype(zero);
      std::vector<py::array> keep;
      auto w = checked_weights<T>(fn, kind_, weights, sz_, false, keep);
      checked_mul(fn, "capacity * batch_size", capacity, batch);
      if (bf16 && sizeof(T) == 8)
        throw py::type_error(std::string(fn) + ": bf16=True needs float32 weights (the float32 master copy), got "
                             "float64");
      auto s = std::make_unique<Tagged<T>>(kind_, sz_.H, sz_.P, sz_.in_sizes, batch, capacity, threads, bf16);
      s->load_weights(w);
      if constexpr (sizeof(T) == 8) f64_ = std::move(s);
      else f32_ = std::move(s);
      double64_ = sizeof(T) == 8;
      return 0;
    });
    batch_ = batch;
    make_out(capacity);
  }

  py::object feed(const py::handle& x_obj, const py::handle& out_obj) {
    return with([&](auto& s) -> py::object {
      using T = typename std::remove_reference_t<decltype(s)>::value_type;
      const char* fn = "Stream.feed";
      py::array x = checked<T>(fn, "x", x_obj, {-1, batch_, sz_.in_sizes[0]});
      const index_t steps = x.shape(0);
      if (steps < 1 || steps > s.capacity())
        throw py::value_error(std::string(fn) + ": x must have 1 to capacity = " + std::to_string(s.capacity()) +
                              " steps, got " + std::to_string(steps) + " (reserve() a larger capacity)");
      py::array out;
      if (out_obj.is_none()) {
        if (steps != last_steps_) {
          last_view_ = out_[py::slice(0, steps, 1)];
          last_steps_ = steps;
        }
        out = last_view_;
      } else {
        out = checked_writable<T>(fn, "out", out_obj, {steps, batch_, sz_.R});
        if (overlaps(out, x)) throw py::value_error(std::string(fn) + ": out must not overlap x");
      }
      ExclusiveCall exclusive(busy_, fn, "stream");
      {
        py::gil_scoped_release release;
        s.feed(cptr<T>(x), steps, mptr<T>(out));
      }
      return out;
    });
  }

  void load_weights(const py::object& weights) {
    with([&](auto& s) -> int {
      using T = typename std::remove_reference_t<decltype(s)>::value_type;
      std::vector<py::array> keep;
      auto w = checked_weights<T>("Stream.load_weights", kind_, weights, sz_, true, keep);
      ExclusiveCall exclusive(busy_, "Stream.load_weights", "stream");
      s.load_weights(w);
      return 0;
    });
  }

  void reserve(index_t capacity) {
    with([&](auto& s) -> int {
      if (capacity < 1)
        throw py::value_error("Stream.reserve: capacity must be >= 1, got " + std::to_string(capacity));
      checked_mul("Stream.reserve", "capacity * batch_size", capacity, batch_);
      ExclusiveCall exclusive(busy_, "Stream.reserve", "stream");
      if (capacity > s.capacity()) {
        s.reserve(capacity);
        make_out(capacity);
      }
      return 0;
    });
  }

  void reset() {
    with([&](auto& s) -> int {
      ExclusiveCall exclusive(busy_, "Stream.reset", "stream");
      s.reset();
      return 0;
    });
  }

  py::tuple get_state() {
    return with([&](auto& s) -> py::tuple {
      using T = typename std::remove_reference_t<decltype(s)>::value_type;
      const index_t L = s.layers(), B = batch_, R = sz_.R, H = sz_.H;
      py::array_t<T> h({L, B, R});
      for (index_t l = 0; l < L; ++l) std::copy(s.h(l), s.h(l) + B * R, h.mutable_data() + l * B * R);
      if (kind_ != CellKind::LSTM) return py::make_tuple(h, py::none());
      py::array_t<T> c({L, B, H});
      for (index_t l = 0; l < L; ++l) std::copy(s.c(l), s.c(l) + B * H, c.mutable_data() + l * B * H);
      return py::make_tuple(h, c);
    });
  }

  void set_state(const py::object& h_obj, const py::object& c_obj) {
    with([&](auto& s) -> int {
      using T = typename std::remove_reference_t<decltype(s)>::value_type;
      const char* fn = "Stream.state";
      const index_t L = s.layers(), B = batch_, R = sz_.R, H = sz_.H;
      py::array h = checked<T>(fn, "h", h_obj, {L, B, R});
      py::array c;
      if (kind_ == CellKind::LSTM) c = checked<T>(fn, "c", c_obj, {L, B, H});
      else if (!c_obj.is_none()) throw py::value_error(std::string(fn) + ": c is only for lstm cells");
      ExclusiveCall exclusive(busy_, fn, "stream");
      for (index_t l = 0; l < L; ++l) {
        std::copy(cptr<T>(h) + l * B * R, cptr<T>(h) + (l + 1) * B * R, s.h(l));
        if (kind_ == CellKind::LSTM) std::copy(cptr<T>(c) + l * B * H, cptr<T>(c) + (l + 1) * B * H, s.c(l));
      }
      return 0;
    });
  }

  std::int64_t allocations() { return with([](auto& s) -> std::int64_t { return s.allocations(); }); }
  index_t capacity() { return with([](auto& s) -> index_t { return s.capacity(); }); }
  int threads() { return with([](auto& s) -> int { return s.threads(); }); }
  bool bf16() { return with([](auto& s) -> bool { return s.bf16(); }); }
  index_t layers() { return with([](auto& s) -> index_t { return s.layers(); }); }
  index_t batch() const { return batch_; }
  std::string dtype() const { return double64_ ? "float64" : "float32"; }
  std::string cell() const { return cell_kind_name(kind_); }

 private:
  void make_out(index_t capacity) {
    if (double64_) out_ = py::array_t<double>({capacity, batch_, sz_.R});
    else out_ = py::array_t<float>({capacity, batch_, sz_.R});
    last_steps_ = -1;
    last_view_ = py::array();
  }

  CellKind kind_ = CellKind::LSTM;
  LayerSizes sz_;
  index_t batch_ = 0;
  bool double64_ = false;
  py::array out_, last_view_;
  index_t last_steps_ = -1;
  std::atomic<bool> busy_{false};
};

}  // namespace

void bind_stream(py::module_& m) {
  py::class_<StreamHandle>(m, "RecurrentStream",
                           R"doc(A stacked unidirectional recurrent network fed chunk by chunk, keeping its state.

RecurrentStream(cell, weights, batch_size, capacity, threads): weights is a list, one
(w_ih, w_hh, b_ih, b_hh, w_hr) tuple per layer (PyTorch layout; biases and w_hr may be None),
packed once. feed(x (T, B, I), out=None) -> (T, B, R): 1 <= T <= capacity; without `out` the
result is a view of the stream's own buffer, overwritten by the next feed. Bit-identical to a
whole-sequence forward over the concatenated chunks. bf16=True (float32 weights): bfloat16 mixed
precision, bit for bit the layer's forward with bf16=True.)doc")
      .def(py::init<const std::string&, const py::object&, index_t, index_t, const py::object&, bool>(),
           py::arg("cell"), py::arg("weights"), py::arg("batch_size"), py::arg("capacity"), py::arg("threads") = 1,
           py::arg("bf16") = false)
      .def_property_readonly("bf16", &StreamHandle::bf16,
                             "bfloat16 mixed precision (bf16=True): bit for bit the bf16 layer's forward.")
      .def("feed", &StreamHandle::feed, py::arg("x"), py::arg("out") = py::none())
      .def("load_weights", &StreamHandle::load_weights, py::arg("weights"))
      .def("reserve", &StreamHandle::reserve, py::arg("capacity"))
      .def("reset", &StreamHandle::reset)
      .def("get_state", &StreamHandle::get_state)
      .def("set_state", &StreamHandle::set_state, py::arg("h"), py::arg("c") = py::none())
      .def_property_readonly("allocations", &StreamHandle::allocations,
                             "Buffer allocations feed() has made over the stream's life (0 while chunks fit).")
      .def_property_readonly("capacity", &StreamHandle::capacity)
      .def_property_readonly("threads", &StreamHandle::threads, "Threads the time loops run on.")
      .def_property_readonly("num_layers", &StreamHandle::layers)
      .def_property_readonly("batch_size", &StreamHandle::batch)
      .def_property_readonly("dtype", &StreamHandle::dtype)
      .def_property_readonly("cell", &StreamHandle::cell);
}

}  // namespace rnncore
