// Build and machine facts for rnncore.get_build_info() and thread defaults.
#include <string>
#include <thread>

#include "bindings/bind.h"
#include "common/parallel.h"
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
  m.def("vmath_kernel", &vmath_kernel, "The float32 activation kernel chosen for this CPU: 'avx2' or 'generic'.");
  m.def(
      "vmath",
      [](const std::string& fn, py::array_t<float, py::array::c_style | py::array::forcecast> x) {
        py::array_t<float> y(x.request().shape);
        const float* px = x.data();
        float* py = y.mutable_data();
        const index_t n = x.size();
        if (fn == "exp") vexp(py, px, n);
        else if (fn == "sigmoid") vsigmoid(py, px, n);
        else if (fn == "tanh") vtanh(py, px, n);
        else throw py::value_error("vmath: fn must be 'exp', 'sigmoid' or 'tanh', got '" + fn + "'");
        return y;
      },
      py::arg("fn"), py::arg("x"), "Apply a vectorised float32 activation (for tests of its accuracy).");
}

}  // namespace rnncore
