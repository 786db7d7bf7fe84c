// The extension module rnncore._core: registration only, no math here.
#include "bindings/bind.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "rnncore's compiled kernels (use the Python API in rnncore, not this module directly).";
  rnncore::bind_system(m);
  rnncore::bind_gemm(m);
  rnncore::bind_recurrent(m);
  rnncore::bind_ops(m);
  rnncore::bind_generate(m);
  rnncore::bind_seq2seq(m);
  rnncore::bind_optim(m);
  rnncore::bind_adaptive(m);
  rnncore::bind_attention(m);
  rnncore::bind_input_feed(m);
  rnncore::bind_cells(m);
  rnncore::bind_stream(m);
  rnncore::bind_quant(m);
}
