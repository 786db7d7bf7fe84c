// _core bindings for the non-recurrent layers: embedding, linear, layer norm and the fused
// softmax + cross-entropy. Checks and messages only; the math lives in csrc/ops/.
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/layernorm.h"
#include "ops/linear.h"
#include "ops/mse.h"

namespace rnncore {

namespace {

index_t element_count(const py::array& a) { return static_cast<index_t>(a.size()); }

// "[i, j]" for the flat (row-major) position `flat` of an array shaped like `a`.
std::string position_str(const py::array& a, index_t flat) {
  std::vector<index_t> idx(static_cast<std::size_t>(a.ndim()));
  for (py::ssize_t i = a.ndim() - 1; i >= 0; --i) {
    const index_t d = a.shape(i);
    idx[static_cast<std::size_t>(i)] = d > 0 ? flat % d : 0;
    flat = d > 0 ? flat / d : 0;
  }
  std::ostringstream s;
  s << "[";
  for (std::size_t i = 0; i < idx.size(); ++i) s << (i ? ", " : "") << idx[i];
  s << "]";
  return s.str();
}

[[noreturn]] void raise_floating_point_error(const std::string& message) {
  PyErr_SetString(PyExc_FloatingPointError, message.c_str());
  throw py::error_already_set();
}

// ---- embedding -------------------------------------------------------------------------------

[[noreturn]] void raise_bad_id(const char* fn, const py::array& ids, index_t pos, index_t V) {
  const std::int64_t id = static_cast<const std::int64_t*>(ids.data())[pos];
  throw py::value_error(std::string(fn) + ": token id " + std::to_string(id) + " at position " +
                        position_str(ids, pos) + " is out of range [0, " + std::to_string(V) +
                        ") (num_embeddings = " + std::to_string(V) + ")");
}

template <typename T>
py::array embedding_forward_py(const py::object& weight_obj, const py::object& ids_obj, int threads) {
  const char* fn = "embedding_forward";
  py::array weight = checked<T>(fn, "weight", weight_obj, {-1, -1});
  py::array ids = checked<std::int64_t>(fn, "ids", ids_obj, any_shape(ids_obj));
  const index_t V = weight.shape(0), E = weight.shape(1), N = element_count(ids);
  std::vector<index_t> out_dims = dims_of(ids);
  out_dims.push_back(E);
  py::array_t<T> out(out_dims);
  index_t bad;
  {
    py::gil_scoped_release release;
    bad = embedding_forward<T>(out.mutable_data(), cptr<T>(weight), cptr<std::int64_t>(ids), N, V, E, threads);
  }
  if (bad >= 0) raise_bad_id(fn, ids, bad, V);
  return out;
}

template <typename T>
void embedding_backward_py(const py::object& dout_obj, const py::object& ids_obj, py::object dweight_obj,
                           index_t padding_idx, int threads) {
  const char* fn = "embedding_backward";
  py::array dweight = checked_writable<T>(fn, "dweight", dweight_obj, {-1, -1});
  py::array ids = checked<std::int64_t>(fn, "ids", ids_obj, any_shape(ids_obj));
  const index_t V = dweight.shape(0), E = dweight.shape(1), N = element_count(ids);
  std::vector<index_t> dout_dims = dims_of(ids);
  dout_dims.push_back(E);
  py::array dout = checked<T>(fn, "dout", dout_obj, dout_dims);
  if (padding_idx < -1 || padding_idx >= V)
    throw py::value_error(std::string(fn) + ": padding_idx must be in [0, " + std::to_string(V) +
                          ") or -1 for none, got " + std::to_string(padding_idx));
  index_t bad;
  {
    py::gil_scoped_release release;
    bad = embedding_backward<T>(mptr<T>(dweight), cptr<T>(dout), cptr<std::int64_t>(ids), padding_idx, N, V, E,
                                threads);
  }
  if (bad >= 0) raise_bad_id(fn, ids, bad, V);
}

// ---- linear ----------------------------------------------------------------------------------

template <typename T>
py::array linear_forward_py(const py::object& x_obj, const py::object& w_obj, const py::object& b_obj, int threads) {
  const char* fn = "linear_forward";
  py::array w = checked<T>(fn, "weight", w_obj, {-1, -1});
  const index_t O = w.shape(0), I = w.shape(1);
  py::array x = checked<T>(fn, "x", x_obj, {-1, I});
  py::array b;
  const T* pb = optional_cptr<T>(fn, "bias", b_obj, {O}, b);
  const index_t N = x.shape(0);
  py::array_t<T> y({N, O});
  T* py = y.mutable_data();
  {
    py::gil_scoped_release release;
    linear_forward<T>(py, cptr<T>(x), cptr<T>(w), pb, N, I, O, threads);
  }
  return y;
}

template <typename T>
py::object linear_backward_py(const py::object& dy_obj, const py::object& x_obj, const py::object& w_obj,
                              py::object dw_obj, py::object db_obj, bool need_dx, int threads) {
  const char* fn = "linear_backward";
  py::array w = checked<T>(fn, "weight", w_obj, {-1, -1});
  const index_t O = w.shape(0), I = w.shape(1);
  py::array x = checked<T>(fn, "x", x_obj, {-1, I});
  const index_t N = x.shape(0);
  py::array dy = checked<T>(fn, "dy", dy_obj, {N, O});
  py::array dw = checked_writable<T>(fn, "dweight", dw_obj, {O, I});
  py::array db;
  T* pdb = optional_mptr<T>(fn, "dbias", db_obj, {O}, db);
  py::array_t<T> dx;
  T* pdx = nullptr;
  if (need_dx) {
    dx = py::array_t<T>({N, I});
    pdx = dx.mutable_data();
  }
  {
    py::gil_scoped_release release;
    linear_backward<T>(pdx, false, mptr<T>(dw), pdb, cptr<T>(dy), cptr<T>(x), cptr<T>(w), N, I, O, threads);
  }
  return need_dx ? py::object(dx) : py::object(py::none());
}

// ---- layer norm ------------------------------------------------------------------------------

template <typename T>
py::tuple layernorm_forward_py(const py::object& x_obj, const py::object& g_obj, const py::object& b_obj, double eps,
                               int threads) {
  const char* fn = "layernorm_forward";
  py::array x = checked<T>(fn, "x", x_obj, {-1, -1});
  const index_t N = x.shape(0), C = x.shape(1);
  py::array g, b;
  const T* pg = optional_cptr<T>(fn, "weight", g_obj, {C}, g);
  const T* pb = optional_cptr<T>(fn, "bias", b_obj, {C}, b);
  if (!(eps >= 0)) throw py::value_error(std::string(fn) + ": eps must be >= 0, got " + std::to_string(eps));
  py::array_t<T> y({N, C}), mean({N}), rstd({N});
  T *py = y.mutable_data(), *pm = mean.mutable_data(), *pr = rstd.mutable_data();
  {
    py::gil_scoped_release release;
    layernorm_forward<T>(py, pm, pr, cptr<T>(x), pg, pb, static_cast<T>(eps), N, C, threads);
  }
  return py::make_tuple(y, mean, rstd);
}

template <typename T>
py::array layernorm_backward_py(const py::object& dy_obj, const py::object& x_obj, const py::object& mean_obj,
                                const py::object& rstd_obj, const py::object& g_obj, py::object dg_obj,
                                py::object db_obj, int threads) {
  const char* fn = "layernorm_backward";
  py::array x = checked<T>(fn, "x", x_obj, {-1, -1});
  const index_t N = x.shape(0), C = x.shape(1);
  py::array dy = checked<T>(fn, "dy", dy_obj, {N, C});
  py::array mean = checked<T>(fn, "mean", mean_obj, {N});
  py::array rstd = checked<T>(fn, "rstd", rstd_obj, {N});
  py::array g, dg, db;
  const T* pg = optional_cptr<T>(fn, "weight", g_obj, {C}, g);
  T* pdg = optional_mptr<T>(fn, "dweight", dg_obj, {C}, dg);
  T* pdb = optional_mptr<T>(fn, "dbias", db_obj, {C}, db);
  py::array_t<T> dx({N, C});
  T* pdx = dx.mutable_data();
  {
    py::gil_scoped_release release;
    layernorm_backward<T>(pdx, false, pdg, pdb, cptr<T>(dy), cptr<T>(x), cptr<T>(mean), cptr<T>(rstd), pg, N, C,
                          threads);
  }
  return dx;
}

// ---- cross-entropy ---------------------------------------------------------------------------

Reduction parse_reduction(const char* fn, const std::string& r) {
  if (r == "mean") return Reduction::Mean;
  if (r == "sum") return Reduction::Sum;
  if (r == "none") return Reduction::None;
  throw py::value_error(std::string(fn) + ": reduction must be 'mean', 'sum' or 'none', got '" + r + "'");
}

template <typename T>
py::tuple cross_entropy_py(const py::object& logits_obj, const py::object& targets_obj, const py::object& mask_obj,
                           std::int64_t ignore_index, const std::string& reduction_name, bool compute_grad,
                           bool return_probs, int threads) {
  const char* fn = "cross_entropy";
  const Reduction reduction = parse_reduction(fn, reduction_name);
  py::array logits = checked<T>(fn, "logits", logits_obj, any_shape(logits_obj));
  if (logits.ndim() < 1)
    throw py::value_error(std::string(fn) + ": logits must have at least one dimension (..., V), got a scalar");
  std::vector<index_t> row_dims = dims_of(logits);
  const index_t V = row_dims.back();
  row_dims.pop_back();
  if (V < 1) throw py::value_error(std::string(fn) + ": logits must have at least one class, got shape " +
                                   shape_str(logits));
  if (!py::isinstance<py::array>(targets_obj))
    throw py::type_error(std::string(fn) + ": targets must be a numpy array of class indices");
  py::array targets = py::reinterpret_borrow<py::array>(targets_obj);
  if (dims_of(targets) != row_dims)
    throw py::value_error(std::string(fn) + ": targets must have shape " + shape_str(row_dims) +
                          " (logits' shape without the class dimension), got " + shape_str(targets));
  targets = checked<std::int64_t>(fn, "targets", targets_obj, row_dims);
  py::array mask;
  const T* pmask = optional_cptr<T>(fn, "mask", mask_obj, row_dims, mask);
  const index_t N = element_count(targets);
  py::array_t<T> losses(row_dims);
  py::array_t<T> dlogits, probs;
  T *pd = nullptr, *pp = nullptr;
  if (compute_grad) {
    dlogits = py::array_t<T>(dims_of(logits));
    pd = dlogits.mutable_data();
  }
  if (return_probs) {
    probs = py::array_t<T>(dims_of(logits));
    pp = probs.mutable_data();
  }
  T* pl = losses.mutable_data();
  CrossEntropyResult r;
  {
    py::gil_scoped_release release;
    r = cross_entropy_fused<T>(pl, pd, pp, cptr<T>(logits), cptr<std::int64_t>(targets), pmask, ignore_index,
                               reduction, N, V, threads);
  }
  if (r.bad_target >= 0) {
    const std::int64_t t = cptr<std::int64_t>(targets)[r.bad_target];
    throw py::value_error(std::string(fn) + ": target " + std::to_string(t) + " at position " +
                          position_str(targets, r.bad_target) + " is out of range [0, " + std::to_string(V) +
                          ") (V = " + std::to_string(V) + " classes; ignore_index = " + std::to_string(ignore_index) +
                          ")");
  }
  if (r.bad_weight >= 0) {
    std::ostringstream s;
    s << fn << ": mask values must be finite and >= 0, got " << cptr<T>(mask)[r.bad_weight] << " at position "
      << position_str(targets, r.bad_weight);
    throw py::value_error(s.str());
  }
  if (r.nonfinite >= 0) {
    std::ostringstream s;
    s << fn << ": the loss is not finite (" << cptr<T>(losses)[r.nonfinite] << ") at position "
      << position_str(targets, r.nonfinite) << ": the logits there hold NaN or infinite values";
    raise_floating_point_error(s.str());
  }
  if (r.total_overflow)
    raise_floating_point_error(std::string(fn) + ": the total weight of the mask overflows (the sum of its values "
                               "is not finite): scale the mask down");
  if (r.overflow >= 0) {
    std::ostringstream s;
    s << fn << ": the weighted loss at position " << position_str(targets, r.overflow) << " overflows (mask "
      << cptr<T>(mask)[r.overflow] << " times a finite loss is not finite): scale the mask down";
    raise_floating_point_error(s.str());
  }
  if (r.sum_overflow)
    raise_floating_point_error(std::string(fn) + ": the " + (reduction == Reduction::Mean ? "mean" : "sum") +
                               " of the losses overflows (every position's loss is finite, their sum is not): "
                               "the logits are too large");
  py::object loss = reduction == Reduction::None ? py::object(losses) : py::object(py::float_(r.loss));
  return py::make_tuple(loss, compute_grad ? py::object(dlogits) : py::object(py::none()),
                        return_probs ? py::object(probs) : py::object(py::none()), r.total_weight);
}

// ---- mean squared error ----------------------------------------------------------------------

template <typename T>
py::tuple mse_loss_py(const py::object& input_obj, const py::object& target_obj, const py::object& mask_obj,
                      const std::string& reduction_name, bool compute_grad, int threads) {
  const char* fn = "mse_loss";
  const Reduction reduction = parse_reduction(fn, reduction_name);
  py::array input = checked<T>(fn, "input", input_obj, any_shape(input_obj));
  if (input.ndim() < 1)
    throw py::value_error(std::string(fn) + ": input must have at least one dimension (..., F), got a scalar");
  const std::vector<index_t> dims = dims_of(input);
  py::array target = checked<T>(fn, "target", target_obj, dims);
  std::vector<index_t> row_dims = dims;
  const index_t F = row_dims.back();
  row_dims.pop_back();
  const index_t N = F > 0 ? element_count(input) / F : 0;
  py::array mask;
  const T* pmask = nullptr;
  bool per_row = false;
  if (!mask_obj.is_none()) {
    if (!py::isinstance<py::array>(mask_obj))
      throw py::type_error(std::string(fn) + ": mask must be a numpy array or None");
    const std::vector<index_t> mdims = dims_of(py::reinterpret_borrow<py::array>(mask_obj));
    per_row = mdims != dims;
    if (per_row && (mdims != row_dims || dims.size() < 2))
      throw py::value_error(std::string(fn) + ": mask must have the input's shape " + shape_str(dims) +
                            (dims.size() >= 2 ? " or its shape without the feature dimension " + shape_str(row_dims)
                                              : std::string()) +
                            ", got " + shape_str(mdims));
    mask = checked<T>(fn, "mask", mask_obj, mdims);
    pmask = cptr<T>(mask);
  }
  py::array_t<T> losses, dinput;
  T *pl = nullptr, *pd = nullptr;
  if (reduction == Reduction::None) {
    losses = py::array_t<T>(dims);
    pl = losses.mutable_data();
  }
  if (compute_grad) {
    dinput = py::array_t<T>(dims);
    pd = dinput.mutable_data();
  }
  MSEResult r;
  {
    py::gil_scoped_release release;
    r = mse_fused<T>(pl, pd, cptr<T>(input), cptr<T>(target), pmask, per_row, reduction, N, F, threads);
  }
  if (pmask != nullptr && F == 0) {
    // No features: the fused loop visits no element and so never reads a weight; a bad mask is
    // refused all the same, with the message it gets when there are features.
    const index_t n = element_count(mask);
    for (index_t k = 0; k < n && r.bad_weight < 0; ++k)
      if (!(pmask[k] >= T(0)) || !std::isfinite(pmask[k])) r.bad_weight = k;
  }
  if (r.bad_weight >= 0) {
    std::ostringstream s;
    s << fn << ": mask values must be finite and >= 0, got " << cptr<T>(mask)[r.bad_weight] << " at position "
      << position_str(mask, r.bad_weight);
    throw py::value_error(s.str());
  }
  if (r.nonfinite_input >= 0 || r.nonfinite_target >= 0) {
    const bool in = r.nonfinite_input >= 0;
    const index_t k = in ? r.nonfinite_input : r.nonfinite_target;
    std::ostringstream s;
    s << fn << ": " << (in ? "input" : "target") << " holds " << (in ? cptr<T>(input)[k] : cptr<T>(target)[k])
      << " at position " << position_str(input, k) << ": every value must be finite (a series with NaN, a "
      << "missing value? fill or drop it first)";
    throw py::value_error(s.str());
  }
  if (r.overflow)
    raise_floating_point_error(std::string(fn) + ": the squared errors (or their sum, their gradient, or the total "
                               "weight of the mask) overflow: the values are too large; scale the data down");
  py::object loss = reduction == Reduction::None ? py::object(losses) : py::object(py::float_(r.loss));
  return py::make_tuple(loss, compute_grad ? py::object(dinput) : py::object(py::none()), r.total_weight);
}

}  // namespace

void bind_ops(py::module_& m) {
  m.def(
      "embedding_forward",
      [](const py::object& weight, const py::object& ids, const py::object& threads_obj) {
        const int threads = checked_threads("embedding_forward", threads_obj);
        return dispatch_float("embedding_forward", "weight", weight,
                              [&](auto zero) { return embedding_forward_py<decltype(zero)>(weight, ids, threads); });
      },
      py::arg("weight"), py::arg("ids"), py::arg("threads") = 1,
      R"doc(Embedding gather: weight (V, E) float32/float64; ids int64, any shape (...), each in [0, V).
Returns out (..., E). Raises ValueError naming the first out-of-range id and its position
before reading the table.)doc");
  m.def(
      "embedding_backward",
      [](const py::object& dout, const py::object& ids, py::object dweight, index_t padding_idx,
         const py::object& threads_obj) {
        const int threads = checked_threads("embedding_backward", threads_obj);
        dispatch_float("embedding_backward", "dweight", dweight, [&](auto zero) {
          embedding_backward_py<decltype(zero)>(dout, ids, dweight, padding_idx, threads);
        });
      },
      py::arg("dout"), py::arg("ids"), py::arg("dweight"), py::arg("padding_idx") = -1, py::arg("threads") = 1,
      R"doc(Embedding scatter-add: dweight (V, E) += dout (..., E) rows at ids (...); the row padding_idx
(-1: none) receives nothing. Deterministic for any thread count.)doc");

  m.def(
      "linear_forward",
      [](const py::object& x, const py::object& weight, const py::object& bias, const py::object& threads_obj) {
        const int threads = checked_threads("linear_forward", threads_obj);
        return dispatch_float("linear_forward", "weight", weight,
                              [&](auto zero) { return linear_forward_py<decltype(zero)>(x, weight, bias, threads); });
      },
      py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("threads") = 1,
      "y (N, O) = x (N, I) weight (O, I)^T + bias (O,) (bias may be None).");
  m.def(
      "linear_backward",
      [](const py::object& dy, const py::object& x, const py::object& weight, py::object dweight, py::object dbias,
         bool need_dx, const py::object& threads_obj) {
        const int threads = checked_threads("linear_backward", threads_obj);
        return dispatch_float("linear_backward", "weight", weight, [&](auto zero) {
          return linear_backward_py<decltype(zero)>(dy, x, weight, dweight, dbias, need_dx, threads);
        });
      },
      py::arg("dy"), py::arg("x"), py::arg("weight"), py::arg("dweight"), py::arg("dbias") = py::none(),
      py::arg("need_dx") = true, py::arg("threads") = 1,
      R"doc(Backward of linear_forward: dweight (O, I) += dy^T x; dbias (O,) += column sums of dy (if not None).
Returns dx (N, I) = dy weight, or None when need_dx is False.)doc");

  m.def(
      "layernorm_forward",
      [](const py::object& x, const py::object& weight, const py::object& bias, double eps,
         const py::object& threads_obj) {
        const int threads = checked_threads("layernorm_forward", threads_obj);
        return dispatch_float("layernorm_forward", "x", x, [&](auto zero) {
          return layernorm_forward_py<decltype(zero)>(x, weight, bias, eps, threads);
        });
      },
      py::arg("x"), py::arg("weight") = py::none(), py::arg("bias") = py::none(), py::arg("eps") = 1e-5,
      py::arg("threads") = 1,
      R"doc(Layer norm over the last dimension: x (N, C); weight, bias (C,) or None.
Returns (y (N, C), mean (N,), rstd (N,)); mean and rstd are what backward needs.)doc");
  m.def(
      "layernorm_backward",
      [](const py::object& dy, const py::object& x, const py::object& mean, const py::object& rstd,
         const py::object& weight, py::object dweight, py::object dbias, const py::object& threads_obj) {
        const int threads = checked_threads("layernorm_backward", threads_obj);
        return dispatch_float("layernorm_backward", "x", x, [&](auto zero) {
          return layernorm_backward_py<decltype(zero)>(dy, x, mean, rstd, weight, dweight, dbias, threads);
        });
      },
      py::arg("dy"), py::arg("x"), py::arg("mean"), py::arg("rstd"), py::arg("weight") = py::none(),
      py::arg("dweight") = py::none(), py::arg("dbias") = py::none(), py::arg("threads") = 1,
      R"doc(Backward of layernorm_forward: returns dx (N, C); adds into dweight, dbias (C,) when given.)doc");

  m.def(
      "cross_entropy",
      [](const py::object& logits, const py::object& targets, const py::object& mask, std::int64_t ignore_index,
         const std::string& reduction, bool compute_grad, bool return_probs, const py::object& threads_obj) {
        const int threads = checked_threads("cross_entropy", threads_obj);
        return dispatch_float("cross_entropy", "logits", logits, [&](auto zero) {
          return cross_entropy_py<decltype(zero)>(logits, targets, mask, ignore_index, reduction, compute_grad,
                                                  return_probs, threads);
        });
      },
      py::arg("logits"), py::arg("targets"), py::arg("mask") = py::none(), py::arg("ignore_index") = -100,
      py::arg("reduction") = "mean", py::arg("compute_grad") = true, py::arg("return_probs") = false,
      py::arg("threads") = 1,
      R"doc(Fused softmax + cross-entropy over the last dimension.

logits (..., V) float32/float64; targets int64 (...) class indices or ignore_index; mask (...)
per-position weights >= 0 (same dtype as logits) or None. reduction 'mean' (divides by the
total weight of the counted positions; 0 when none counts), 'sum' or 'none'.
Returns (loss, dlogits or None, probs or None, total_weight): loss is a float (an array (...)
for 'none'); dlogits (..., V) is the gradient of the loss. Raises ValueError for a target out
of range or a bad mask value, FloatingPointError when the loss is NaN or infinite.)doc");
  m.def(
      "mse_loss",
      [](const py::object& input, const py::object& target, const py::object& mask, const std::string& reduction,
         bool compute_grad, const py::object& threads_obj) {
        const int threads = checked_threads("mse_loss", threads_obj);
        return dispatch_float("mse_loss", "input", input, [&](auto zero) {
          return mse_loss_py<decltype(zero)>(input, target, mask, reduction, compute_grad, threads);
        });
      },
      py::arg("input"), py::arg("target"), py::arg("mask") = py::none(), py::arg("reduction") = "mean",
      py::arg("compute_grad") = true, py::arg("threads") = 1,
      R"doc(Fused mean squared error: the loss and its gradient with respect to input in one sweep.

input, target (..., F) float32/float64, the same shape and dtype; mask None, or weights >= 0
(same dtype) shaped like input (one per element) or like input without its last dimension
(one per position, e.g. (T, B) for (T, B, F)). reduction 'mean' (divides by the total weight
over all elements; 0 when it is 0), 'sum' or 'none'.
Returns (loss, dinput or None, total_weight): loss is a float (an array (..., F) for 'none').
Raises ValueError for NaN or infinite values in input or target, or a bad mask value, and
FloatingPointError when the squared errors overflow.)doc");
}

}  // namespace rnncore
