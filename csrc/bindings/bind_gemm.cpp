// _core.gemm: the engine's GEMM exposed for tests and benchmarks.
#include "bindings/arrays.h"
#include "gemm/gemm.h"

namespace rnncore {

namespace {

template <typename T>
void gemm_py(const py::array& a, const py::array& b, py::array& c, bool trans_a, bool trans_b, double alpha,
             double beta, int threads) {
  const char* fn = "gemm";
  py::array A = checked<T>(fn, "a", a, {-1, -1});
  py::array B = checked<T>(fn, "b", b, {-1, -1});
  const index_t M = trans_a ? A.shape(1) : A.shape(0), K = trans_a ? A.shape(0) : A.shape(1);
  const index_t N = trans_b ? B.shape(0) : B.shape(1);
  const index_t Kb = trans_b ? B.shape(1) : B.shape(0);
  if (Kb != K) {
    throw py::value_error("gemm: inner dimensions differ: op(a) is (" + std::to_string(M) + ", " +
                          std::to_string(K) + "), op(b) is (" + std::to_string(Kb) + ", " + std::to_string(N) + ")");
  }
  py::array C = checked_writable<T>(fn, "c", c, {M, N});
  checked_threads(fn, threads);
  const T* pa = cptr<T>(A);
  const T* pb = cptr<T>(B);
  T* pc = mptr<T>(C);
  py::gil_scoped_release release;
  gemm<T>(trans_a, trans_b, M, N, K, static_cast<T>(alpha), pa, A.shape(1), pb, B.shape(1), static_cast<T>(beta), pc,
          N, threads);
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def(
      "gemm",
      [](const py::array& a, const py::array& b, py::array& c, bool trans_a, bool trans_b, double alpha, double beta,
         int threads) {
        if (py::isinstance<py::array_t<double>>(a) && py::array(a).dtype().is(py::dtype::of<double>()))
          gemm_py<double>(a, b, c, trans_a, trans_b, alpha, beta, threads);
        else
          gemm_py<float>(a, b, c, trans_a, trans_b, alpha, beta, threads);
      },
      py::arg("a"), py::arg("b"), py::arg("c"), py::arg("trans_a") = false, py::arg("trans_b") = false,
      py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("threads") = 1,
      "c = alpha * op(a) @ op(b) + beta * c in place (float32 or float64, C-contiguous).");
}

}  // namespace rnncore
