// Build and machine facts for rnncore.get_build_info() and thread defaults.
#include <string>
#include <thread>

#include "bindings/arrays.h"
#include "bindings/bind.h"
#include "common/cpu.h"
#include "common/parallel.h"
#include "gemm/gemm.h"
#include "recurrent/recurrent.h"
#include "common/vmath.h"

namespace rnncore {

void bind_system(py::module_& m) {
  m.def("openmp_enabled", &openmp_enabled, "True when the extension was built with OpenMP.");
  m.def(
      "max_threads",
      []() {
#if defined(_OPENMP)
        return omp_get_num_procs();
#else
        return 1;
#endif
      },
      "Processors OpenMP can use (1 without OpenMP).");
  m.def("thread_limit", &thread_limit,
        "The largest thread count any call accepts: max(256, 4 x processors); larger counts raise ValueError.");
  m.def("vmath_kernel", &vmath_kernel, "The float32 activation kernel chosen for this process: 'avx512', 'avx2' or 'generic' (those of isa()).");
  m.def(
      "isa", [] { return std::string(isa_name(active_isa())); },
      "The instruction set every kernel of this process uses: 'generic', 'avx2' or 'avx512' (the best the CPU "
      "supports, or RNNCORE_ISA's choice clamped to it; fixed at first use).");
  m.def(
      "supported_isas",
      [] {
        py::list out;
        for (int i = 0; i <= static_cast<int>(best_supported_isa()); ++i) out.append(isa_name(static_cast<Isa>(i)));
        return out;
      },
      "The instruction sets this CPU can run, lowest first (each can be forced with RNNCORE_ISA).");
  m.def(
      "recurrent_threads",
      [](const std::string& cell, index_t B, index_t H, const py::object& threads_obj, index_t proj_size) {
        const int threads = checked_threads("recurrent_threads", threads_obj);
        if (B < 0 || H < 0)
          throw py::value_error("recurrent_threads: B and H must be >= 0, got B=" + std::to_string(B) +
                                ", H=" + std::to_string(H));
        const CellKind kind = parse_cell("recurrent_threads", cell);
        if (proj_size != 0 && (kind != CellKind::LSTM || proj_size < 0 || proj_size >= H))
          throw py::value_error("recurrent_threads: proj_size must be 0, or in [1, H) = [1, " + std::to_string(H) +
                                ") for an lstm cell, got " + std::to_string(proj_size) + " for " +
                                cell_kind_name(kind));
        return recurrence_threads(kind, B, H, threads, proj_size);
      },
      py::arg("cell"), py::arg("B"), py::arg("H"), py::arg("threads"), py::arg("proj_size") = 0,
      "Threads the time loop of a layer of this cell, batch B and hidden size H (and proj_size, an LSTM's "
      "projection, 0 for none) runs on when given `threads`.");
  m.def(
      "gemm_threads",
      [](index_t M, index_t N, index_t K, const py::object& threads_obj) {
        const int threads = checked_threads("gemm_threads", threads_obj);
        if (M < 0 || N < 0 || K < 0)
          throw py::value_error("gemm_threads: M, N, K must be >= 0, got M=" + std::to_string(M) +
                                ", N=" + std::to_string(N) + ", K=" + std::to_string(K));
        return gemm_threads(M, N, K, threads);
      },
      py::arg("M"), py::arg("N"), py::arg("K"), py::arg("threads"),
      "Threads a GEMM C (M, N) += A (M, K) B (K, N) runs on when given `threads`.");
  m.def(
      "vmath",
      [](const std::string& fn, py::array_t<float, py::array::c_style | py::array::forcecast> x,
         const py::object& kernel) {
        const VmathKernels* k = vmath_kernels(active_isa());
        if (!kernel.is_none()) {
          if (!py::isinstance<py::str>(kernel))
            throw py::type_error("vmath: kernel must be None or a str, got " +
                                 py::str(py::type::of(kernel).attr("__name__")).cast<std::string>());
          const std::string name = kernel.cast<std::string>();
          Isa isa;
          if (name == "generic") isa = Isa::generic;
          else if (name == "avx2") isa = Isa::avx2;
          else if (name == "avx512") isa = Isa::avx512;
          else throw py::value_error("vmath: kernel must be None, 'generic', 'avx2' or 'avx512', got '" + name + "'");
          k = vmath_kernels(isa);
          if (k == nullptr)
            throw py::value_error("vmath: kernel '" + name + "' needs a CPU that supports it; this one runs " +
                                  isa_name(best_supported_isa()) + " at most");
        }
        void (*apply)(float*, const float*, index_t) = nullptr;
        if (fn == "exp") apply = k->exp;
        else if (fn == "sigmoid") apply = k->sigmoid;
        else if (fn == "tanh") apply = k->tanh;
        else throw py::value_error("vmath: fn must be 'exp', 'sigmoid' or 'tanh', got '" + fn + "'");
        py::array_t<float> y(x.request().shape);
        const float* px = x.data();
        float* py = y.mutable_data();
        const index_t n = x.size();
        py::gil_scoped_release release;
        apply(py, px, n);
        return y;
      },
      py::arg("fn"), py::arg("x"), py::arg("kernel") = py::none(),
      "Apply a vectorised float32 activation (for tests of its accuracy) with the process's kernel, or with "
      "`kernel` ('generic', 'avx2', 'avx512': any this CPU supports).");
}

}  // namespace rnncore
