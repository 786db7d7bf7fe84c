// Checks at the Python boundary: rank, shape, dtype and contiguity, with messages that name
// the function, the argument, what was expected and what came. Nothing is converted or
// copied here: the Python layer converts exactly once, explicitly, before calling in.
//
// Also here, once for every bind_*.cpp: the float32/float64 dispatch (dispatch_float), optional
// arrays (None or a checked array), shapes as dimension lists, the cell-name parser, thread
// counts (checked_threads), integer lists (int64_list), sizes multiplied from user input (checked_mul), and the guard
// against two threads running one stateful object at once (ExclusiveCall).
#pragma once

#include <atomic>
#include <cctype>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/bind.h"
#include "common/defs.h"
#include "common/parallel.h"
#include "cells/cell.h"

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
template <>
inline const char* dtype_name<std::int32_t>() { return "int32"; }
template <>
inline const char* dtype_name<std::int8_t>() { return "int8"; }
template <>
inline const char* dtype_name<std::uint8_t>() { return "uint8"; }
template <>
inline const char* dtype_name<std::uint16_t>() { return "uint16"; }

// True when `obj` is a numpy array of dtype T exactly (false for anything else, None included).
template <typename T>
bool has_dtype(const py::handle& obj) {
  return py::isinstance<py::array>(obj) && py::reinterpret_borrow<py::array>(obj).dtype().is(py::dtype::of<T>());
}

// The shape of `a` as a dimension list (the form checked() takes).
inline std::vector<index_t> dims_of(const py::array& a) {
  std::vector<index_t> d(static_cast<std::size_t>(a.ndim()));
  for (py::ssize_t i = 0; i < a.ndim(); ++i) d[static_cast<std::size_t>(i)] = a.shape(i);
  return d;
}

// Free dimensions of obj's own rank, so that checked() accepts an array of any shape (and
// still checks type, dtype and layout). Not an array: {} (checked() then names its type).
inline std::vector<index_t> any_shape(const py::handle& obj) {
  if (!py::isinstance<py::array>(obj)) return {};
  return std::vector<index_t>(static_cast<std::size_t>(py::reinterpret_borrow<py::array>(obj).ndim()), -1);
}

// The scalar type of a call, decided by one argument: calls f(T()) with T = double when `obj`
// is a float64 array and T = float when it is a float32 one, and returns what f returns (both
// instantiations must return the same type). Write the body once as a generic lambda:
//   return dispatch_float(fn, "x", x, [&](auto zero) { using T = decltype(zero); ... });
// Anything else raises TypeError naming the function and the argument.
template <typename F>
auto dispatch_float(const char* fn, const char* name, const py::handle& obj, F&& f) {
  if (has_dtype<double>(obj)) return f(double());
  if (has_dtype<float>(obj)) return f(float());
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(fn) + ": " + name + " must be a numpy array, got " +
                         py::str(py::type::of(obj)).cast<std::string>());
  throw py::type_error(std::string(fn) + ": " + name + " must have dtype float32 or float64, got " +
                       dtype_str(py::reinterpret_borrow<py::array>(obj)));
}

// `a` must have dtype T exactly; raises TypeError otherwise. (Part of checked(); alone for
// views that checked() would refuse, e.g. strided rows in the GEMM's test hooks.)
template <typename T>
void check_dtype(const char* fn, const char* name, const py::array& a) {
  if (!py::isinstance<py::array_t<T>>(a) || !a.dtype().is(py::dtype::of<T>()))
    throw py::type_error(std::string(fn) + ": " + name + " must have dtype " + dtype_name<T>() + ", got " +
                         dtype_str(a));
}

// Every array the kernels read or write must sit at an address aligned to its dtype (numpy
// can make views one byte off, e.g. np.frombuffer(buf, offset=1); a scalar access there is
// undefined behaviour). ValueError naming `what` otherwise; empty arrays are not read.
inline void check_aligned(const char* fn, const char* what, const py::array& a) {
  if (a && a.size() > 0 &&
      reinterpret_cast<std::uintptr_t>(a.data()) % static_cast<std::uintptr_t>(a.itemsize()) != 0)
    throw py::value_error(std::string(fn) + ": " + what + " must be aligned to its dtype (it is a view at a "
                          "misaligned address; pass a copy, e.g. numpy.array(a))");
}

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
  check_dtype<T>(fn, name, a);
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
  check_aligned(fn, name, a);
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

// An optional argument: None gives a null pointer; anything else must pass checked<T>() (or
// checked_writable<T>() for optional_mptr) and is kept alive in `keep` for the call.
template <typename T>
const T* optional_cptr(const char* fn, const char* name, const py::handle& obj, const std::vector<index_t>& dims,
                       py::array& keep) {
  if (obj.is_none()) return nullptr;
  keep = checked<T>(fn, name, obj, dims);
  return cptr<T>(keep);
}
template <typename T>
T* optional_mptr(const char* fn, const char* name, const py::handle& obj, const std::vector<index_t>& dims,
                 py::array& keep) {
  if (obj.is_none()) return nullptr;
  keep = checked_writable<T>(fn, name, obj, dims);
  return mptr<T>(keep);
}

// A thread count from Python: an int (or numpy integer, not a bool) in [1, thread_limit()]
// (common/parallel.h). Taken as an object, not an int, so that 2**31 or 2**64 get the same
// one-line ValueError as 10**5 instead of pybind's overload dump. Raises TypeError for a
// non-integer. `name` is the argument's name in the message.
inline int checked_threads(const char* fn, const py::handle& threads, const char* name = "threads") {
  PyObject* obj = threads.ptr();
  if (PyBool_Check(obj) || !PyIndex_Check(obj))
    throw py::type_error(std::string(fn) + ": " + name + " must be an int, got " +
                         py::str(py::type::of(threads).attr("__name__")).cast<std::string>());
  py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(obj));
  if (!value) throw py::error_already_set();
  int overflow = 0;
  const long long n = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow == 0 && n == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow == 0 && n >= 1 && n <= thread_limit()) return static_cast<int>(n);
  const std::string got = py::str(value).cast<std::string>();
  if (overflow < 0 || (overflow == 0 && n < 1))
    throw py::value_error(std::string(fn) + ": " + name + " must be >= 1 (resolved in Python), got " + got);
  throw py::value_error(std::string(fn) + ": " + name + " must be <= " + std::to_string(thread_limit()) +
                        " (the thread limit, max(256, 4 x processors)), got " + got);
}

// `obj` (None: empty) as a list of int64: an iterable of Python or numpy integers (not bools).
// TypeError naming `name` for anything else, ValueError for an integer past int64 (py::cast
// would raise RuntimeError "Unable to cast" for both).
inline std::vector<std::int64_t> int64_list(const char* fn, const char* name, const py::handle& obj) {
  std::vector<std::int64_t> out;
  if (obj.is_none()) return out;
  const std::string what = std::string(fn) + ": " + name;
  py::iterator items;
  try {
    items = py::iter(obj);
  } catch (py::error_already_set&) {
    throw py::type_error(what + " must be a sequence of ints, got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  }
  for (const py::handle& item : items) {
    if (PyBool_Check(item.ptr()) || !PyIndex_Check(item.ptr()))
      throw py::type_error(what + " must hold ints, got " +
                           py::str(py::type::of(item).attr("__name__")).cast<std::string>() + " at index " +
                           std::to_string(out.size()));
    py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(item.ptr()));
    if (!value) throw py::error_already_set();
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
    if (overflow == 0 && v == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (overflow != 0)
      throw py::value_error(what + "[" + std::to_string(out.size()) + "] = " + py::str(value).cast<std::string>() +
                            " does not fit in int64");
    out.push_back(static_cast<std::int64_t>(v));
  }
  return out;
}

// a * b for sizes that come from the caller (a batch times a vocabulary, ...), checked before
// anything is allocated: ValueError naming `what` when the product does not fit in int64.
inline index_t checked_mul(const char* fn, const char* what, index_t a, index_t b) {
  index_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r))
    throw py::value_error(std::string(fn) + ": " + what + " = " + std::to_string(a) + " * " + std::to_string(b) +
                          " is too large (it does not fit in 64 bits)");
  return r;
}

// One call at a time on an object holding per-call state (a recurrent workspace, a decoder):
// the second of two overlapping calls (from two Python threads; the first released the GIL)
// raises RuntimeError at once instead of both computing with the same buffers. Not a lock:
// nothing ever waits. Hold it for the whole call, from before the first use of the state.
class ExclusiveCall {
 public:
  ExclusiveCall(std::atomic<bool>& busy, const std::string& fn, const char* what) : busy_(busy) {
    if (busy_.exchange(true, std::memory_order_acquire))
      throw std::runtime_error(fn + ": this " + what +
                               " is already running in another thread; use one model per thread or a lock");
  }
  ~ExclusiveCall() { busy_.store(false, std::memory_order_release); }
  ExclusiveCall(const ExclusiveCall&) = delete;
  ExclusiveCall& operator=(const ExclusiveCall&) = delete;

 private:
  std::atomic<bool>& busy_;
};

// A cell name, in any case ("LSTM" is "lstm"): lstm, gru, rnn_tanh, rnn_relu. Anything else
// raises ValueError listing the valid names.
inline CellKind parse_cell(const char* fn, const std::string& cell) {
  CellKind kind;
  if (!parse_cell_kind(cell, &kind))
    throw py::value_error(std::string(fn) + ": cell must be one of 'lstm', 'gru', 'rnn_tanh', 'rnn_relu', got '" +
                          cell + "'");
  return kind;
}

}  // namespace rnncore
