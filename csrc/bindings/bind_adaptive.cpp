// Bindings for the adaptive softmax (ops/adaptive_softmax.h). Checks only; no math here.
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/bind.h"
#include "ops/adaptive_softmax.h"

namespace rnncore {

namespace {

template <typename T>
py::tuple adaptive_softmax_py(const py::object& x_obj, const py::object& targets_obj, const py::object& head_w_obj,
                              const py::object& head_b_obj, const py::list& proj_objs, const py::list& out_objs,
                              const std::vector<index_t>& cutoffs, const py::object& w_obj,
                              const py::object& dhead_w_obj, const py::object& dhead_b_obj,
                              const py::object& dproj_objs, const py::object& dout_objs, int threads) {
  const char* fn = "adaptive_softmax";
  py::array x = checked<T>(fn, "x", x_obj, {-1, -1});
  const index_t N = x.shape(0), I = x.shape(1);
  py::array targets = checked<std::int64_t>(fn, "targets", targets_obj, {N});
  const std::size_t C = proj_objs.size();
  if (out_objs.size() != C)
    throw py::value_error(std::string(fn) + ": proj and out must list one weight per cluster, got " +
                          std::to_string(C) + " and " + std::to_string(out_objs.size()));
  if (cutoffs.size() != C + 1)
    throw py::value_error(std::string(fn) + ": cutoffs must hold C + 1 = " + std::to_string(C + 1) +
                          " values (the shortlist size, each cluster's end), got " + std::to_string(cutoffs.size()));
  if (cutoffs[0] < 1)
    throw py::value_error(std::string(fn) + ": cutoffs[0] (the shortlist size) must be >= 1, got " +
                          std::to_string(cutoffs[0]));
  for (std::size_t i = 1; i < cutoffs.size(); ++i)
    if (cutoffs[i] <= cutoffs[i - 1])
      throw py::value_error(std::string(fn) + ": cutoffs must be increasing, got cutoffs[" + std::to_string(i) +
                            "] = " + std::to_string(cutoffs[i]) + " after " + std::to_string(cutoffs[i - 1]));
  // (no overflow: the cutoffs increase, so cutoffs[0] + C <= cutoffs[C])
  const index_t Hs = cutoffs[0] + static_cast<index_t>(C), V = cutoffs[C];
  py::array head_w = checked<T>(fn, "head_w", head_w_obj, {Hs, I});
  py::array keep_b;
  const T* head_b = optional_cptr<T>(fn, "head_b", head_b_obj, {Hs}, keep_b);
  py::array keep_w;
  const T* w = optional_cptr<T>(fn, "row_weights", w_obj, {N}, keep_w);
  const bool grad = w != nullptr;
  py::array keep_dhw, keep_dhb;
  T* dhead_w = grad ? optional_mptr<T>(fn, "dhead_w", dhead_w_obj, {Hs, I}, keep_dhw) : nullptr;
  T* dhead_b = grad && head_b ? optional_mptr<T>(fn, "dhead_b", dhead_b_obj, {Hs}, keep_dhb) : nullptr;
  if (grad && (!dhead_w || (head_b && !dhead_b)))
    throw py::value_error(std::string(fn) + ": with row_weights, dhead_w (and dhead_b with a head bias) are required");
  std::vector<py::array> keep;
  std::vector<AdaptiveCluster<T>> clusters(C);
  py::list dprojs, douts;
  if (grad) {
    if (dproj_objs.is_none() || dout_objs.is_none())
      throw py::value_error(std::string(fn) + ": with row_weights, dproj and dout are required");
    dprojs = dproj_objs.cast<py::list>();
    douts = dout_objs.cast<py::list>();
    if (dprojs.size() != C || douts.size() != C)
      throw py::value_error(std::string(fn) + ": dproj and dout must list one gradient per cluster (" +
                            std::to_string(C) + ")");
  }
  for (std::size_t i = 0; i < C; ++i) {
    const std::string pn = "proj[" + std::to_string(i) + "]", on = "out[" + std::to_string(i) + "]";
    py::array p = checked<T>(fn, pn.c_str(), proj_objs[i], {-1, I});
    const index_t h = p.shape(0), o = cutoffs[i + 1] - cutoffs[i];
    if (h < 1) throw py::value_error(std::string(fn) + ": " + pn + " must have at least one row");
    py::array q = checked<T>(fn, on.c_str(), out_objs[i], {o, h});
    keep.push_back(p);
    keep.push_back(q);
    AdaptiveCluster<T>& cl = clusters[i];
    cl.proj = cptr<T>(p);
    cl.out = cptr<T>(q);
    cl.h = h;
    cl.o = o;
    if (grad) {
      py::array dp = checked_writable<T>(fn, ("d" + pn).c_str(), dprojs[i], {h, I});
      py::array dq = checked_writable<T>(fn, ("d" + on).c_str(), douts[i], {o, h});
      keep.push_back(dp);
      keep.push_back(dq);
      cl.dproj = mptr<T>(dp);
      cl.dout = mptr<T>(dq);
    }
  }
  py::array_t<T> output(std::vector<index_t>{N});
  py::object dx_out = py::none();
  T* dx = nullptr;
  if (grad) {
    py::array_t<T> dxa(std::vector<index_t>{N, I});
    dx = dxa.mutable_data();
    dx_out = dxa;
  }
  T* out_p = output.mutable_data();
  index_t bad;
  {
    py::gil_scoped_release release;
    bad = adaptive_softmax_fused<T>(out_p, dx, dhead_w, dhead_b, cptr<T>(x), cptr<std::int64_t>(targets), w,
                                    cptr<T>(head_w), head_b, clusters, cutoffs, N, I, threads);
  }
  if (bad >= 0)
    throw py::value_error(std::string(fn) + ": target " + std::to_string(cptr<std::int64_t>(targets)[bad]) +
                          " at position " + std::to_string(bad) + " is out of range [0, " + std::to_string(V) + ")");
  return py::make_tuple(output, dx_out);
}

}  // namespace

void bind_adaptive(py::module_& m) {
  m.def(
      "adaptive_softmax",
      [](const py::object& x, const py::object& targets, const py::object& head_w, const py::object& head_b,
         const py::list& proj, const py::list& out, const py::list& cutoffs_list,
         const py::object& row_weights, const py::object& dhead_w, const py::object& dhead_b,
         const py::object& dproj, const py::object& dout, const py::object& threads_obj) {
        const int threads = checked_threads("adaptive_softmax", threads_obj);
        const std::vector<index_t> cutoffs = int64_list("adaptive_softmax", "cutoffs", cutoffs_list);
        return dispatch_float("adaptive_softmax", "x", x, [&](auto zero) {
          return adaptive_softmax_py<decltype(zero)>(x, targets, head_w, head_b, proj, out, cutoffs, row_weights,
                                                     dhead_w, dhead_b, dproj, dout, threads);
        });
      },
      py::arg("x"), py::arg("targets"), py::arg("head_w"), py::arg("head_b"), py::arg("proj"), py::arg("out"),
      py::arg("cutoffs"), py::arg("row_weights") = py::none(), py::arg("dhead_w") = py::none(),
      py::arg("dhead_b") = py::none(), py::arg("dproj") = py::none(), py::arg("dout") = py::none(),
      py::arg("threads") = 1,
      R"doc(Fused adaptive softmax: returns (output (N,), dx (N, I) or None).

x (N, I) float32/float64; targets (N,) int64 in [0, V); head_w (S + C, I), head_b (S + C,) or
None; proj[i] (h_i, I), out[i] (o_i, h_i); cutoffs [S, ..., V] (C + 1 values). output[n] is
log p(targets[n] | x[n]). With row_weights (N,), the gradient of sum_n row_weights[n] * -output[n]
is returned as dx and added into dhead_w, dhead_b, dproj[i], dout[i].)doc");
}

}  // namespace rnncore
