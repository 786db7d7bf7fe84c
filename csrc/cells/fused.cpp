// The fused cell kernel set of each instruction set, and the process's (see cells/fused.h).
#include "cells/fused.h"

namespace rnncore {

const FusedCellKernels* fused_cell_kernels(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(best_supported_isa())) return nullptr;
  if (isa == Isa::avx512) return fused_cells_avx512();
  if (isa == Isa::avx2) return fused_cells_avx2();
  return nullptr;
}

const FusedCellKernels* fused_cell_kernels() {
  static const FusedCellKernels* k = fused_cell_kernels(active_isa());  // once per process
  return k;
}

const char* fused_cells_kernel() {
  const FusedCellKernels* k = fused_cell_kernels();
  return k ? k->name : "generic";
}

}  // namespace rnncore
