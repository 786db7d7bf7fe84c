// Checks at the Python boundary: rank, shape, dtype and contiguity, with messages that name
// the function, the argument, what was expected and what came. Nothing is converted or
// copied here: the Python layer converts exactly once, explicitly, before calling in.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "bindings/bind.h"
#include "common/defs.h"

namespace rnncore {

inline std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  if (a.ndim() == 1) s << ",";
  s << ")";
  return s.str();
}

inline std::string shape_str(const std::vector<index_t>& dims) {
  std::ostringstream s;
  s << "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s << (i ? ", " : "") << dims[i];
  if (dims.size() == 1) s << ",";
  s << ")";
  return s.str();
}

inline std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

template <typename T>
const char* dtype_name();
template <>
inline const char* dtype_name<float>() { return "float32"; }
template <>
inline const char* dtype_name<double>() { return "float64"; }
template <>
inline const char* dtype_name<std::int64_t>() { return "int64"; }

// `obj` must be a C-contiguous ndarray of dtype T with exactly `dims` (a dim < 0 is free).
// Returns it as an array (no copy). Raises TypeError for a wrong type or dtype, ValueError
// for a wrong rank, shape or layout.
template <typename T>
py::array checked(const char* fn, const char* name, const py::handle& obj, const std::vector<index_t>& dims) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string(fn) + ": " + name + " must be a numpy array, got " +
                         py::str(py::type::of(obj)).cast<std::string>());
  }
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!py::isinstance<py::array_t<T>>(a) || !a.dtype().is(py::dtype::of<T>())) {
    throw py::type_error(std::string(fn) + ": " + name + " must have dtype " + dtype_name<T>() + ", got " +
                         dtype_str(a));
  }
  bool ok = a.ndim() == static_cast<py::ssize_t>(dims.size());
  for (std::size_t i = 0; ok && i < dims.size(); ++i) ok = dims[i] < 0 || a.shape(i) == dims[i];
  if (!ok) {
    std::ostringstream s;
    s << fn << ": " << name << " must have shape (";
    for (std::size_t i = 0; i < dims.size(); ++i) {
      s << (i ? ", " : "");
      if (dims[i] < 0) s << "*"; else s << dims[i];
    }
    if (dims.size() == 1) s << ",";
    s << "), got " << shape_str(a);
    throw py::value_error(s.str());
  }
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(fn) + ": " + name + " must be C-contiguous (use numpy.ascontiguousarray)");
  }
  return a;
}

template <typename T>
py::array checked_writable(const char* fn, const char* name, const py::handle& obj,
                           const std::vector<index_t>& dims) {
  py::array a = checked<T>(fn, name, obj, dims);
  if (!a.writeable()) throw py::value_error(std::string(fn) + ": " + name + " must be writeable");
  return a;
}

template <typename T>
const T* cptr(const py::array& a) { return static_cast<const T*>(a.data()); }
template <typename T>
T* mptr(py::array& a) { return static_cast<T*>(a.mutable_data()); }

inline int checked_threads(const char* fn, int threads) {
  if (threads < 1) {
    throw py::value_error(std::string(fn) + ": threads must be >= 1 (resolved in Python), got " +
                          std::to_string(threads));
  }
  return threads;
}

}  // namespace rnncore
