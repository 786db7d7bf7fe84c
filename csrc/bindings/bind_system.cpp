// Build and machine facts for rnncore.get_build_info() and thread defaults.
#include <thread>

#include "bindings/bind.h"
#include "common/parallel.h"

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
}

}  // namespace rnncore
