// _core.{sgd,adam,rmsprop,adagrad}_step and the gradient-norm helpers behind clip_grad_norm_.
//
// Checks here are structural (dtype, shape, layout, aliasing, which state arrays an option
// needs); hyper-parameter ranges are checked once by the Python optimizers.
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "bindings/arrays.h"
#include "optim/optim.h"

namespace rnncore {

namespace {

void checked_step(const char* fn, std::int64_t step) {
  if (step < 1)
    throw py::value_error(std::string(fn) + ": step must be >= 1 (this update's count), got " + std::to_string(step));
}

// Arrays of one update: the parameter p, its gradient g and its state, all of N elements,
// of dtype T and distinct in memory. Holds them alive.
template <typename T>
class Operands {
 public:
  Operands(const char* fn, const py::handle& param, const py::handle& grad) : fn_(fn) {
    py::array a = checked<T>(fn_, "param", param, any_shape(param));
    if (!a.writeable()) throw py::value_error(std::string(fn_) + ": param must be writeable");
    dims_ = dims_of(a);
    N = static_cast<index_t>(a.size());
    p = add(a, "param");
    g = add(checked<T>(fn_, "grad", grad, dims_), "grad");
  }
  T* state(const py::handle& obj, const char* name) { return add(checked_writable<T>(fn_, name, obj, dims_), name); }
  // A state array that must be given exactly when `needed` (null otherwise).
  T* optional_state(const py::object& obj, const char* name, bool needed, const char* why) {
    if (!needed) {
      if (!obj.is_none())
        throw py::value_error(std::string(fn_) + ": " + name + " must be None " + why + ", got an array");
      return nullptr;
    }
    if (obj.is_none()) throw py::value_error(std::string(fn_) + ": " + name + " is required " + why);
    return state(obj, name);
  }

  T* p = nullptr;
  const T* g = nullptr;
  index_t N = 0;

 private:
  T* add(py::array a, const char* name) {
    const char* lo = static_cast<const char*>(a.data());
    const char* hi = lo + a.nbytes();
    for (const auto& k : kept_) {
      if (a.nbytes() > 0 && k.lo < hi && lo < k.hi)
        throw py::value_error(std::string(fn_) + ": " + name + " and " + k.name +
                              " share memory; every array of an update must be distinct");
    }
    kept_.push_back({a, lo, hi, name});
    return static_cast<T*>(a.mutable_data());
  }
  struct Kept {
    py::array array;
    const char* lo;
    const char* hi;
    std::string name;
  };
  const char* fn_;
  std::vector<index_t> dims_;
  std::vector<Kept> kept_;
};

// A list of float32/float64 arrays, each C-contiguous (and writeable for a MutableArraySpan),
// as spans the kernels can use with the GIL released; `keep` holds the arrays alive.
template <typename Span>
std::vector<Span> array_spans(const char* fn, const py::list& arrays, std::vector<py::array>& keep) {
  constexpr bool write = std::is_same<Span, MutableArraySpan>::value;
  std::vector<Span> spans;
  for (std::size_t k = 0; k < arrays.size(); ++k) {
    const py::handle obj = arrays[k];
    const std::string name = "arrays[" + std::to_string(k) + "]";
    dispatch_float(fn, name.c_str(), obj, [&](auto zero) {
      using T = decltype(zero);
      py::array a = write ? checked_writable<T>(fn, name.c_str(), obj, any_shape(obj))
                          : checked<T>(fn, name.c_str(), obj, any_shape(obj));
      if constexpr (write) spans.push_back({a.mutable_data(), static_cast<index_t>(a.size()), sizeof(T) == 8});
      else spans.push_back({a.data(), static_cast<index_t>(a.size()), sizeof(T) == 8});
      keep.push_back(a);
    });
  }
  return spans;
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def(
      "sgd_step",
      [](const py::object& param, const py::object& grad, const py::object& momentum_buffer, double lr,
         double momentum, double dampening, double weight_decay, bool nesterov, bool maximize, bool first,
         const py::object& threads_obj) {
        const char* fn = "sgd_step";
        const int threads = checked_threads(fn, threads_obj);
        SGDOptions o;
        o.lr = lr, o.momentum = momentum, o.dampening = dampening, o.weight_decay = weight_decay;
        o.nesterov = nesterov, o.maximize = maximize, o.first = first;
        dispatch_float(fn, "param", param, [&](auto zero) {
          using T = decltype(zero);
          Operands<T> ops(fn, param, grad);
          T* b = ops.optional_state(momentum_buffer, "momentum_buffer", o.momentum != 0.0, "when momentum != 0");
          py::gil_scoped_release release;
          sgd_step<T>(ops.p, b, ops.g, ops.N, o, threads);
        });
      },
      py::arg("param"), py::arg("grad"), py::arg("momentum_buffer") = py::none(), py::kw_only(), py::arg("lr"),
      py::arg("momentum") = 0.0, py::arg("dampening") = 0.0, py::arg("weight_decay") = 0.0,
      py::arg("nesterov") = false, py::arg("maximize") = false, py::arg("first") = false, py::arg("threads") = 1,
      R"doc(One SGD update of `param` in place (PyTorch's rule).

param, grad, momentum_buffer: same shape and dtype (float32/float64), C-contiguous; the buffer
is required exactly when momentum != 0 and is overwritten with the gradient when `first`.)doc");

  m.def(
      "adam_step",
      [](const py::object& param, const py::object& grad, const py::object& exp_avg, const py::object& exp_avg_sq,
         const py::object& max_exp_avg_sq, std::int64_t step, double lr, double beta1, double beta2, double eps,
         double weight_decay, bool decoupled, bool amsgrad, bool maximize, const py::object& threads_obj) {
        const char* fn = "adam_step";
        const int threads = checked_threads(fn, threads_obj);
        checked_step(fn, step);
        AdamOptions o;
        o.step = step, o.lr = lr, o.beta1 = beta1, o.beta2 = beta2, o.eps = eps, o.weight_decay = weight_decay;
        o.decoupled = decoupled, o.amsgrad = amsgrad, o.maximize = maximize;
        dispatch_float(fn, "param", param, [&](auto zero) {
          using T = decltype(zero);
          Operands<T> ops(fn, param, grad);
          T* m = ops.state(exp_avg, "exp_avg");
          T* v = ops.state(exp_avg_sq, "exp_avg_sq");
          T* vmax = ops.optional_state(max_exp_avg_sq, "max_exp_avg_sq", amsgrad, "with amsgrad");
          py::gil_scoped_release release;
          adam_step<T>(ops.p, m, v, vmax, ops.g, ops.N, o, threads);
        });
      },
      py::arg("param"), py::arg("grad"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
      py::arg("max_exp_avg_sq") = py::none(), py::kw_only(), py::arg("step"), py::arg("lr"), py::arg("beta1"),
      py::arg("beta2"), py::arg("eps"), py::arg("weight_decay") = 0.0, py::arg("decoupled") = false,
      py::arg("amsgrad") = false, py::arg("maximize") = false, py::arg("threads") = 1,
      R"doc(One Adam (decoupled=False) or AdamW (decoupled=True) update of `param` in place.

step counts this update (>= 1). max_exp_avg_sq is required exactly when amsgrad.)doc");

  m.def(
      "rmsprop_step",
      [](const py::object& param, const py::object& grad, const py::object& square_avg, const py::object& grad_avg,
         const py::object& momentum_buffer, double lr, double alpha, double eps, double weight_decay,
         double momentum, bool centered, bool maximize, const py::object& threads_obj) {
        const char* fn = "rmsprop_step";
        const int threads = checked_threads(fn, threads_obj);
        RMSpropOptions o;
        o.lr = lr, o.alpha = alpha, o.eps = eps, o.weight_decay = weight_decay, o.momentum = momentum;
        o.centered = centered, o.maximize = maximize;
        dispatch_float(fn, "param", param, [&](auto zero) {
          using T = decltype(zero);
          Operands<T> ops(fn, param, grad);
          T* sq = ops.state(square_avg, "square_avg");
          T* ga = ops.optional_state(grad_avg, "grad_avg", centered, "when centered");
          T* buf = ops.optional_state(momentum_buffer, "momentum_buffer", momentum > 0.0, "when momentum > 0");
          py::gil_scoped_release release;
          rmsprop_step<T>(ops.p, sq, ga, buf, ops.g, ops.N, o, threads);
        });
      },
      py::arg("param"), py::arg("grad"), py::arg("square_avg"), py::arg("grad_avg") = py::none(),
      py::arg("momentum_buffer") = py::none(), py::kw_only(), py::arg("lr"), py::arg("alpha"), py::arg("eps"),
      py::arg("weight_decay") = 0.0, py::arg("momentum") = 0.0, py::arg("centered") = false,
      py::arg("maximize") = false, py::arg("threads") = 1,
      R"doc(One RMSprop update of `param` in place. grad_avg is required exactly when centered,
momentum_buffer exactly when momentum > 0.)doc");

  m.def(
      "adagrad_step",
      [](const py::object& param, const py::object& grad, const py::object& sum, std::int64_t step, double lr,
         double lr_decay, double weight_decay, double eps, bool maximize, const py::object& threads_obj) {
        const char* fn = "adagrad_step";
        const int threads = checked_threads(fn, threads_obj);
        checked_step(fn, step);
        AdagradOptions o;
        o.step = step, o.lr = lr, o.lr_decay = lr_decay, o.weight_decay = weight_decay, o.eps = eps;
        o.maximize = maximize;
        dispatch_float(fn, "param", param, [&](auto zero) {
          using T = decltype(zero);
          Operands<T> ops(fn, param, grad);
          T* ps = ops.state(sum, "sum");
          py::gil_scoped_release release;
          adagrad_step<T>(ops.p, ps, ops.g, ops.N, o, threads);
        });
      },
      py::arg("param"), py::arg("grad"), py::arg("sum"), py::kw_only(), py::arg("step"), py::arg("lr"),
      py::arg("lr_decay") = 0.0, py::arg("weight_decay") = 0.0, py::arg("eps") = 1e-10, py::arg("maximize") = false,
      py::arg("threads") = 1, R"doc(One Adagrad update of `param` in place; step counts this update (>= 1).)doc");

  m.def(
      "norm_power_sum",
      [](const py::list& arrays, double norm_type, const py::object& threads_obj) {
        const char* fn = "norm_power_sum";
        const int threads = checked_threads(fn, threads_obj);
        if (!(norm_type > 0.0))
          throw py::value_error(std::string(fn) + ": norm_type must be > 0 (or inf), got " + std::to_string(norm_type));
        std::vector<py::array> keep;
        const std::vector<ArraySpan> spans = array_spans<ArraySpan>(fn, arrays, keep);
        py::gil_scoped_release release;
        return norm_power_sum(spans, norm_type, threads);
      },
      py::arg("arrays"), py::arg("norm_type") = 2.0, py::arg("threads") = 1,
      R"doc(sum |x|^p over every element of every array (max |x| when p is inf), in double.

Arrays are combined in list order, each summed in a fixed order (thread-count independent).)doc");

  m.def(
      "scale_",
      [](const py::list& arrays, double scale, const py::object& threads_obj) {
        const int threads = checked_threads("scale_", threads_obj);
        std::vector<py::array> keep;
        const std::vector<MutableArraySpan> spans = array_spans<MutableArraySpan>("scale_", arrays, keep);
        py::gil_scoped_release release;
        scale_inplace(spans, scale, threads);
      },
      py::arg("arrays"), py::arg("scale"), py::arg("threads") = 1, "Multiply every array in place by `scale`.");

  m.def(
      "clamp_",
      [](const py::list& arrays, double lo, double hi, const py::object& threads_obj) {
        const int threads = checked_threads("clamp_", threads_obj);
        if (!(lo <= hi)) throw py::value_error("clamp_: lo must be <= hi, got lo=" + std::to_string(lo) +
                                               ", hi=" + std::to_string(hi));
        std::vector<py::array> keep;
        const std::vector<MutableArraySpan> spans = array_spans<MutableArraySpan>("clamp_", arrays, keep);
        py::gil_scoped_release release;
        clamp_inplace(spans, lo, hi, threads);
      },
      py::arg("arrays"), py::arg("lo"), py::arg("hi"), py::arg("threads") = 1,
      "Clamp every array in place to [lo, hi] (NaN stays NaN).");
}

}  // namespace rnncore
