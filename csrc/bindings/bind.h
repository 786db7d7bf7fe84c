// rnncore bindings: one bind_<area>.cpp per area, each registering its functions on the
// extension module from module.cpp. This directory is the only place that includes pybind11.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace rnncore {
namespace py = pybind11;

void bind_system(py::module_& m);
void bind_gemm(py::module_& m);
void bind_recurrent(py::module_& m);
void bind_ops(py::module_& m);
void bind_generate(py::module_& m);
void bind_seq2seq(py::module_& m);
void bind_optim(py::module_& m);
void bind_adaptive(py::module_& m);
void bind_attention(py::module_& m);
void bind_input_feed(py::module_& m);
void bind_cells(py::module_& m);
void bind_stream(py::module_& m);
void bind_quant(py::module_& m);

}  // namespace rnncore
