// _core.gemm: the engine's GEMM exposed for tests and benchmarks.
#include "bindings/arrays.h"
#include "gemm/gemm.h"
#include "gemm/kernels.h"

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
  const T* pa = cptr<T>(A);
  const T* pb = cptr<T>(B);
  T* pc = mptr<T>(C);
  py::gil_scoped_release release;
  gemm<T>(trans_a, trans_b, M, N, K, static_cast<T>(alpha), pa, A.shape(1), pb, B.shape(1), static_cast<T>(beta), pc,
          N, threads);
}

// Test hooks: 2-D views whose rows are contiguous but may be further apart than their length
// (numpy slices such as big[:, :n]), so leading dimensions > row length reach the kernels.
index_t row_stride(const char* fn, const char* name, const py::array& a) {
  if (a.ndim() != 2) throw py::value_error(std::string(fn) + ": " + name + " must be 2-D, got " + shape_str(a));
  const py::ssize_t item = a.itemsize();
  if (a.size() == 0) return a.shape(1) < 1 ? 1 : a.shape(1);  // never dereferenced
  if (a.shape(1) > 1 && a.strides(1) != item)
    throw py::value_error(std::string(fn) + ": " + name + " rows must be contiguous");
  if (a.shape(0) > 1 && (a.strides(0) % item != 0 || a.strides(0) < a.shape(1) * item))
    throw py::value_error(std::string(fn) + ": " + name + " must have a positive row stride >= its row length");
  const index_t ld = a.shape(0) > 1 ? a.strides(0) / item : a.shape(1);
  return ld < 1 ? 1 : ld;
}

template <typename T>
void gemm_strided_py(const py::array& a, const py::array& b, py::array& c, bool trans_a, bool trans_b, double alpha,
                     double beta, int threads) {
  const char* fn = "gemm_strided_test";
  check_dtype<T>(fn, "a", a);
  check_dtype<T>(fn, "b", b);
  check_dtype<T>(fn, "c", c);
  const index_t lda = row_stride(fn, "a", a), ldb = row_stride(fn, "b", b), ldc = row_stride(fn, "c", c);
  const index_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
  const index_t N = trans_b ? b.shape(0) : b.shape(1), Kb = trans_b ? b.shape(1) : b.shape(0);
  if (Kb != K || c.shape(0) != M || c.shape(1) != N) throw py::value_error(std::string(fn) + ": shapes differ");
  if (!c.writeable()) throw py::value_error(std::string(fn) + ": c must be writeable");
  const T* pa = static_cast<const T*>(a.data());
  const T* pb = static_cast<const T*>(b.data());
  T* pc = static_cast<T*>(c.mutable_data());
  py::gil_scoped_release release;
  gemm<T>(trans_a, trans_b, M, N, K, static_cast<T>(alpha), pa, lda, pb, ldb, static_cast<T>(beta), pc, ldc, threads);
}

template <typename T>
void gemm_packed_py(const py::array& a, const py::array& b, bool trans_b, double beta, py::array& c, int repeat) {
  const char* fn = "gemm_packed_test";
  check_dtype<T>(fn, "a", a);
  check_dtype<T>(fn, "b", b);
  check_dtype<T>(fn, "c", c);
  const index_t lda = row_stride(fn, "a", a), ldb = row_stride(fn, "b", b), ldc = row_stride(fn, "c", c);
  const index_t M = a.shape(0), K = a.shape(1);
  const index_t N = trans_b ? b.shape(0) : b.shape(1), Kb = trans_b ? b.shape(1) : b.shape(0);
  if (Kb != K || c.shape(0) != M || c.shape(1) != N) throw py::value_error(std::string(fn) + ": shapes differ");
  if (!c.writeable()) throw py::value_error(std::string(fn) + ": c must be writeable");
  const T* pa = static_cast<const T*>(a.data());
  const T* pb = static_cast<const T*>(b.data());
  T* pc = static_cast<T*>(c.mutable_data());
  py::gil_scoped_release release;
  PackedB<T> packed;
  packed.pack(trans_b, K, N, pb, ldb);
  for (int r = 0; r < repeat; ++r) gemm_packed<T>(M, pa, lda, packed, static_cast<T>(beta), pc, ldc);
}

// _core.gemm (C-contiguous arrays) and _core.gemm_strided_test (rows any distance apart): the
// same arguments, float32 or float64 by a's dtype.
template <bool kStrided>
void gemm_entry(const py::array& a, const py::array& b, py::array& c, bool trans_a, bool trans_b, double alpha,
                double beta, const py::object& threads_obj) {
  const char* fn = kStrided ? "gemm_strided_test" : "gemm";
  const int threads = checked_threads(fn, threads_obj);
  dispatch_float(fn, "a", a, [&](auto zero) {
    using T = decltype(zero);
    if constexpr (kStrided) gemm_strided_py<T>(a, b, c, trans_a, trans_b, alpha, beta, threads);
    else gemm_py<T>(a, b, c, trans_a, trans_b, alpha, beta, threads);
  });
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def("gemm", &gemm_entry<false>, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("threads") = 1,
        "c = alpha * op(a) @ op(b) + beta * c in place (float32 or float64, C-contiguous).");
  m.def(
      "gemm_kernel", [] { return std::string(gemm_detail::active_kernels<float>().name); },
      "The GEMM microkernel set in use: 'avx512', 'avx2' or 'generic' (those of the process's isa()).");
  m.def(
      "gemm_config",
      [] {
        const CacheSizes& c = cache_sizes();
        py::dict caches;
        caches["l1d"] = c.l1d;
        caches["l2"] = c.l2;
        caches["l3"] = c.l3;
        caches["source"] = std::string(c.source);
        py::dict out;
        out["caches"] = caches;
        auto blocks = [](const auto& ks) {
          py::dict d;
          d["kernel"] = std::string(ks.name);
          d["mr"] = ks.mr;
          d["nr"] = ks.nr;
          d["mc"] = ks.mc;
          d["kc"] = ks.kc;
          d["nc"] = ks.nc;
          return d;
        };
        out["float32"] = blocks(gemm_detail::active_kernels<float>());
        out["float64"] = blocks(gemm_detail::active_kernels<double>());
        return out;
      },
      "The GEMM's tiles and cache blocks per dtype ({'float32': {kernel, mr, nr, mc, kc, nc}, 'float64': ...}) "
      "and the per-core cache sizes they were derived from ({'caches': {l1d, l2, l3, source}}; source is 'env' "
      "for RNNCORE_CACHE_SIZES, 'sysconf', 'cpuid' or 'default').");
  m.def("gemm_strided_test", &gemm_entry<true>, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("threads") = 1,
        "Test hook: gemm on 2-D views with contiguous rows and any row stride (leading dimensions).");
  m.def(
      "gemm_packed_test",
      [](const py::array& a, const py::array& b, bool trans_b, double beta, py::array& c, int repeat) {
        if (repeat < 1) throw py::value_error("gemm_packed_test: repeat must be >= 1");
        dispatch_float("gemm_packed_test", "a", a,
                       [&](auto zero) { gemm_packed_py<decltype(zero)>(a, b, trans_b, beta, c, repeat); });
      },
      py::arg("a"), py::arg("b"), py::arg("trans_b"), py::arg("beta"), py::arg("c"), py::arg("repeat") = 1,
      "Test hook: c = a @ op(b) + beta * c through PackedB::pack + gemm_packed (views with any row stride); "
      "with repeat > 1 the product is formed repeat times from one packing (for benchmarks; use beta = 0).");
}

}  // namespace rnncore
