// _core.{sgd,adam,rmsprop,adagrad}_step and the gradient-norm helpers behind clip_grad_norm_.
//
// Checks here are structural (dtype, shape, layout, aliasing, which state arrays an option
// needs); hyper-parameter ranges are checked once by the Python optimizers.
#include <cmath>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "optim/optim.h"

namespace rnncore {

namespace {

std::vector<index_t> dims_of(const py::array& a) {
  std::vector<index_t> d(static_cast<std::size_t>(a.ndim()));
  for (py::ssize_t i = 0; i < a.ndim(); ++i) d[static_cast<std::size_t>(i)] = a.shape(i);
  return d;
}

bool has_dtype(const py::handle& obj, const py::dtype& dt) {
  return py::isinstance<py::array>(obj) && py::reinterpret_borrow<py::array>(obj).dtype().is(dt);
}

// The parameter decides the scalar type: float32 or float64, anything else is a TypeError.
bool param_is_double(const char* fn, const py::handle& param) {
  if (!py::isinstance<py::array>(param))
    throw py::type_error(std::string(fn) + ": param must be a numpy array, got " +
                         py::str(py::type::of(param)).cast<std::string>());
  if (has_dtype(param, py::dtype::of<double>())) return true;
  if (has_dtype(param, py::dtype::of<float>())) return false;
  throw py::type_error(std::string(fn) + ": param must have dtype float32 or float64, got " +
                       dtype_str(py::reinterpret_borrow<py::array>(param)));
}

// Arrays of one update: the parameter, its gradient and its state. All distinct in memory.
class Operands {
 public:
  explicit Operands(const char* fn) : fn_(fn) {}

  template <typename T>
  T* param(const py::handle& obj) {
    py::array a = checked<T>(fn_, "param", obj, dims_of(py::reinterpret_borrow<py::array>(obj)));
    if (!a.writeable()) throw py::value_error(std::string(fn_) + ": param must be writeable");
    dims_ = dims_of(a);
    return add<T>(a, "param");
  }
  template <typename T>
  const T* input(const py::handle& obj, const char* name) {
    py::array a = checked<T>(fn_, name, obj, dims_);
    return add<T>(a, name);
  }
  template <typename T>
  T* state(const py::handle& obj, const char* name) {
    py::array a = checked_writable<T>(fn_, name, obj, dims_);
    return add<T>(a, name);
  }
  // A state array that must be given exactly when `needed` (null otherwise).
  template <typename T>
  T* optional_state(const py::object& obj, const char* name, bool needed, const char* why) {
    if (!needed) {
      if (!obj.is_none())
        throw py::value_error(std::string(fn_) + ": " + name + " must be None " + why + ", got an array");
      return nullptr;
    }
    if (obj.is_none()) throw py::value_error(std::string(fn_) + ": " + name + " is required " + why);
    return state<T>(obj, name);
  }
  index_t size() const {
    index_t n = 1;
    for (index_t d : dims_) n *= d;
    return n;
  }

 private:
  template <typename T>
  T* add(py::array& a, const char* name) {
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

template <typename T>
void sgd_impl(const py::object& param, const py::object& grad, const py::object& buf, SGDOptions o, int threads) {
  const char* fn = "sgd_step";
  checked_threads(fn, threads);
  Operands ops(fn);
  T* p = ops.param<T>(param);
  const T* g = ops.input<T>(grad, "grad");
  T* b = ops.optional_state<T>(buf, "momentum_buffer", o.momentum != 0.0, "when momentum != 0");
  const index_t N = ops.size();
  py::gil_scoped_release release;
  sgd_step<T>(p, b, g, N, o, threads);
}

template <typename T>
void adam_impl(const py::object& param, const py::object& grad, const py::object& m, const py::object& v,
               const py::object& vmax, AdamOptions o, int threads) {
  const char* fn = "adam_step";
  checked_threads(fn, threads);
  if (o.step < 1) throw py::value_error(std::string(fn) + ": step must be >= 1 (this update's count), got " +
                                        std::to_string(o.step));
  Operands ops(fn);
  T* p = ops.param<T>(param);
  const T* g = ops.input<T>(grad, "grad");
  T* pm = ops.state<T>(m, "exp_avg");
  T* pv = ops.state<T>(v, "exp_avg_sq");
  T* pvmax = ops.optional_state<T>(vmax, "max_exp_avg_sq", o.amsgrad, "with amsgrad");
  const index_t N = ops.size();
  py::gil_scoped_release release;
  adam_step<T>(p, pm, pv, pvmax, g, N, o, threads);
}

template <typename T>
void rmsprop_impl(const py::object& param, const py::object& grad, const py::object& sq, const py::object& ga,
                  const py::object& buf, RMSpropOptions o, int threads) {
  const char* fn = "rmsprop_step";
  checked_threads(fn, threads);
  Operands ops(fn);
  T* p = ops.param<T>(param);
  const T* g = ops.input<T>(grad, "grad");
  T* psq = ops.state<T>(sq, "square_avg");
  T* pga = ops.optional_state<T>(ga, "grad_avg", o.centered, "when centered");
  T* pbuf = ops.optional_state<T>(buf, "momentum_buffer", o.momentum > 0.0, "when momentum > 0");
  const index_t N = ops.size();
  py::gil_scoped_release release;
  rmsprop_step<T>(p, psq, pga, pbuf, g, N, o, threads);
}

template <typename T>
void adagrad_impl(const py::object& param, const py::object& grad, const py::object& sum, AdagradOptions o,
                  int threads) {
  const char* fn = "adagrad_step";
  checked_threads(fn, threads);
  if (o.step < 1) throw py::value_error(std::string(fn) + ": step must be >= 1 (this update's count), got " +
                                        std::to_string(o.step));
  Operands ops(fn);
  T* p = ops.param<T>(param);
  const T* g = ops.input<T>(grad, "grad");
  T* ps = ops.state<T>(sum, "sum");
  const index_t N = ops.size();
  py::gil_scoped_release release;
  adagrad_step<T>(p, ps, g, N, o, threads);
}

// A list of float32/float64 arrays, each C-contiguous (and writeable when `write`), as raw
// pointers the kernels can use with the GIL released. Holds the arrays alive.
struct ArrayList {
  std::vector<py::array> keep;
  std::vector<ArraySpan> spans;  // in list order
  void* data(std::size_t k) const { return const_cast<void*>(spans[k].data); }
};

ArrayList array_list(const char* fn, const py::list& arrays, bool write) {
  ArrayList out;
  for (std::size_t k = 0; k < arrays.size(); ++k) {
    const py::handle obj = arrays[k];
    const std::string name = "arrays[" + std::to_string(k) + "]";
    if (!py::isinstance<py::array>(obj))
      throw py::type_error(std::string(fn) + ": " + name + " must be a numpy array, got " +
                           py::str(py::type::of(obj)).cast<std::string>());
    py::array a = py::reinterpret_borrow<py::array>(obj);
    const bool dbl = a.dtype().is(py::dtype::of<double>());
    if (!dbl && !a.dtype().is(py::dtype::of<float>()))
      throw py::type_error(std::string(fn) + ": " + name + " must have dtype float32 or float64, got " + dtype_str(a));
    if (!(a.flags() & py::array::c_style))
      throw py::value_error(std::string(fn) + ": " + name + " must be C-contiguous");
    if (write && !a.writeable()) throw py::value_error(std::string(fn) + ": " + name + " must be writeable");
    const void* ptr = write ? a.mutable_data() : a.data();
    out.spans.push_back({ptr, static_cast<index_t>(a.size()), dbl});
    out.keep.push_back(a);
  }
  return out;
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def(
      "sgd_step",
      [](const py::object& param, const py::object& grad, const py::object& momentum_buffer, double lr,
         double momentum, double dampening, double weight_decay, bool nesterov, bool maximize, bool first,
         int threads) {
        SGDOptions o;
        o.lr = lr, o.momentum = momentum, o.dampening = dampening, o.weight_decay = weight_decay;
        o.nesterov = nesterov, o.maximize = maximize, o.first = first;
        if (param_is_double("sgd_step", param)) sgd_impl<double>(param, grad, momentum_buffer, o, threads);
        else sgd_impl<float>(param, grad, momentum_buffer, o, threads);
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
         double weight_decay, bool decoupled, bool amsgrad, bool maximize, int threads) {
        AdamOptions o;
        o.step = step, o.lr = lr, o.beta1 = beta1, o.beta2 = beta2, o.eps = eps, o.weight_decay = weight_decay;
        o.decoupled = decoupled, o.amsgrad = amsgrad, o.maximize = maximize;
        if (param_is_double("adam_step", param))
          adam_impl<double>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, o, threads);
        else adam_impl<float>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, o, threads);
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
         double momentum, bool centered, bool maximize, int threads) {
        RMSpropOptions o;
        o.lr = lr, o.alpha = alpha, o.eps = eps, o.weight_decay = weight_decay, o.momentum = momentum;
        o.centered = centered, o.maximize = maximize;
        if (param_is_double("rmsprop_step", param))
          rmsprop_impl<double>(param, grad, square_avg, grad_avg, momentum_buffer, o, threads);
        else rmsprop_impl<float>(param, grad, square_avg, grad_avg, momentum_buffer, o, threads);
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
         double lr_decay, double weight_decay, double eps, bool maximize, int threads) {
        AdagradOptions o;
        o.step = step, o.lr = lr, o.lr_decay = lr_decay, o.weight_decay = weight_decay, o.eps = eps;
        o.maximize = maximize;
        if (param_is_double("adagrad_step", param)) adagrad_impl<double>(param, grad, sum, o, threads);
        else adagrad_impl<float>(param, grad, sum, o, threads);
      },
      py::arg("param"), py::arg("grad"), py::arg("sum"), py::kw_only(), py::arg("step"), py::arg("lr"),
      py::arg("lr_decay") = 0.0, py::arg("weight_decay") = 0.0, py::arg("eps") = 1e-10, py::arg("maximize") = false,
      py::arg("threads") = 1, R"doc(One Adagrad update of `param` in place; step counts this update (>= 1).)doc");

  m.def(
      "norm_power_sum",
      [](const py::list& arrays, double norm_type, int threads) {
        const char* fn = "norm_power_sum";
        checked_threads(fn, threads);
        if (!(norm_type > 0.0))
          throw py::value_error(std::string(fn) + ": norm_type must be > 0 (or inf), got " + std::to_string(norm_type));
        ArrayList list = array_list(fn, arrays, false);
        py::gil_scoped_release release;
        return norm_power_sum(list.spans, norm_type, threads);
      },
      py::arg("arrays"), py::arg("norm_type") = 2.0, py::arg("threads") = 1,
      R"doc(sum |x|^p over every element of every array (max |x| when p is inf), in double.

Arrays are combined in list order, each summed in a fixed order (thread-count independent).)doc");

  m.def(
      "scale_",
      [](const py::list& arrays, double scale, int threads) {
        checked_threads("scale_", threads);
        ArrayList list = array_list("scale_", arrays, true);
        py::gil_scoped_release release;
        for (std::size_t k = 0; k < list.spans.size(); ++k) {
          const ArraySpan& s = list.spans[k];
          if (s.f64) scale_inplace<double>(static_cast<double*>(list.data(k)), s.N, scale, threads);
          else scale_inplace<float>(static_cast<float*>(list.data(k)), s.N, scale, threads);
        }
      },
      py::arg("arrays"), py::arg("scale"), py::arg("threads") = 1, "Multiply every array in place by `scale`.");

  m.def(
      "clamp_",
      [](const py::list& arrays, double lo, double hi, int threads) {
        checked_threads("clamp_", threads);
        if (!(lo <= hi)) throw py::value_error("clamp_: lo must be <= hi, got lo=" + std::to_string(lo) +
                                               ", hi=" + std::to_string(hi));
        ArrayList list = array_list("clamp_", arrays, true);
        py::gil_scoped_release release;
        for (std::size_t k = 0; k < list.spans.size(); ++k) {
          const ArraySpan& s = list.spans[k];
          if (s.f64) clamp_inplace<double>(static_cast<double*>(list.data(k)), s.N, lo, hi, threads);
          else clamp_inplace<float>(static_cast<float*>(list.data(k)), s.N, lo, hi, threads);
        }
      },
      py::arg("arrays"), py::arg("lo"), py::arg("hi"), py::arg("threads") = 1,
      "Clamp every array in place to [lo, hi] (NaN stays NaN).");
}

}  // namespace rnncore
