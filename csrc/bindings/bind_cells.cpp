// Test and benchmark hooks for one step of a cell (cells/), on a chosen kernel set: the fused
// float32 kernels of an instruction set (cells/fused.h) or the portable loops, so one process
// can run every path its CPU supports and compare them. Not used by the layers.
//
//   cell_forward_test(cell, gates, hg, h_prev, c_prev, bias, b_hn, kernel, units, repeat)
//   cell_backward_test(cell, gates, h_prev, h, dh_carry, dy, c_prev, c, hn, dc, kernel, units, repeat)
//
// Shapes (B rows, H units, G gates, the slice [lo, hi) of n = hi - lo units, default [0, H)):
// gates (B, G*H), hg (B, G*n) (the slice's W_hh h_prev, gate-major), h_prev / c_prev / h / c /
// dh_carry / dy / hn / dc (B, H), bias (G*H) (fused, cells/cell.h), b_hn (H). Every row runs
// Cell::forward_with / backward_with(k, step, H, lo, hi) as the time loops do. The arrays passed
// in are never written: the in-place ones are copied into the returned dict first.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/bind.h"
#include "cells/cell.h"
#include "cells/fused.h"
#include "common/cpu.h"

namespace rnncore {

namespace {

constexpr int kMaxRepeat = 1000000;

// The kernel argument: None (the process's set), "generic" (the portable loops), "avx2",
// "avx512". *k is the fused set to run, null for the portable loops.
void parse_kernel(const char* fn, const py::handle& obj, bool is_float, const FusedCellKernels** k) {
  if (obj.is_none()) {
    *k = is_float ? fused_cell_kernels() : nullptr;
    return;
  }
  if (!py::isinstance<py::str>(obj))
    throw py::type_error(std::string(fn) + ": kernel must be None or a str, got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  const std::string name = obj.cast<std::string>();
  Isa isa;
  if (name == "generic") isa = Isa::generic;
  else if (name == "avx2") isa = Isa::avx2;
  else if (name == "avx512") isa = Isa::avx512;
  else
    throw py::value_error(std::string(fn) + ": kernel must be None, 'generic', 'avx2' or 'avx512', got '" + name +
                          "'");
  if (isa == Isa::generic) {
    *k = nullptr;
    return;
  }
  if (!is_float)
    throw py::value_error(std::string(fn) + ": kernel '" + name +
                          "' is a float32 kernel set; float64 runs the portable loops (kernel None or 'generic')");
  *k = fused_cell_kernels(isa);
  if (*k == nullptr)
    throw py::value_error(std::string(fn) + ": kernel '" + name + "' needs a CPU that supports it; this one runs " +
                          isa_name(best_supported_isa()) + " at most");
}

// units: None -> [0, H); else two ints 0 <= lo <= hi <= H.
void parse_units(const char* fn, const py::handle& obj, index_t H, index_t* lo, index_t* hi) {
  *lo = 0;
  *hi = H;
  if (obj.is_none()) return;
  const std::vector<std::int64_t> u = int64_list(fn, "units", obj);
  if (u.size() != 2 || u[0] < 0 || u[0] > u[1] || u[1] > H)
    throw py::value_error(std::string(fn) + ": units must be (lo, hi) with 0 <= lo <= hi <= H = " +
                          std::to_string(H) + ", got " + py::str(obj).cast<std::string>());
  *lo = u[0];
  *hi = u[1];
}

int checked_repeat(const char* fn, int repeat) {
  if (repeat < 1 || repeat > kMaxRepeat)
    throw py::value_error(std::string(fn) + ": repeat must be in [1, " + std::to_string(kMaxRepeat) + "], got " +
                          std::to_string(repeat));
  return repeat;
}

template <typename T>
py::array_t<T> copy_of(const py::array& a) {
  py::array_t<T> out(dims_of(a));
  if (a.size() > 0) std::memcpy(out.mutable_data(), a.data(), sizeof(T) * static_cast<std::size_t>(a.size()));
  return out;
}

template <typename T>
py::array_t<T> zeros(index_t B, index_t H) {
  py::array_t<T> out({B, H});
  if (B * H > 0) std::memset(out.mutable_data(), 0, sizeof(T) * static_cast<std::size_t>(B * H));
  return out;
}

// Runs `restore` then `step` repeat times; the median time of `step` alone, in seconds.
template <typename R, typename S>
double timed(int repeat, R&& restore, S&& step) {
  std::vector<double> t(static_cast<std::size_t>(repeat));
  for (int r = 0; r < repeat; ++r) {
    restore();
    const auto t0 = std::chrono::steady_clock::now();
    step();
    t[static_cast<std::size_t>(r)] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::nth_element(t.begin(), t.begin() + repeat / 2, t.end());
  return t[static_cast<std::size_t>(repeat / 2)];
}

template <typename T>
void restore_from(py::array_t<T>& dst, const py::array& src) {
  if (src.size() > 0) std::memcpy(dst.mutable_data(), src.data(), sizeof(T) * static_cast<std::size_t>(src.size()));
}

template <typename T>
py::dict forward_py(const char* fn, CellKind kind, const py::array& gates_in, const py::array& hg_in,
                    const py::handle& h_prev_obj, const py::handle& c_prev_obj, const py::handle& bias_obj,
                    const py::handle& b_hn_obj, const FusedCellKernels* k, const py::handle& units, int repeat) {
  return with_cell(kind, [&](auto tag) {
    using Cell = typename decltype(tag)::template type<T>;
    constexpr int G = Cell::G;
    const py::array h_prev = checked<T>(fn, "h_prev", h_prev_obj, {-1, -1});
    const index_t B = h_prev.shape(0), H = h_prev.shape(1);
    const py::array gates = checked<T>(fn, "gates", gates_in, {B, checked_mul(fn, "G*H", G, H)});
    index_t lo, hi;
    parse_units(fn, units, H, &lo, &hi);
    const index_t n = hi - lo;
    const py::array hg = checked<T>(fn, "hg", hg_in, {B, G * n});
    py::array keep_c, keep_b, keep_bhn;
    const T* c_prev = nullptr;
    if (Cell::kHasCellState) c_prev = cptr<T>(keep_c = checked<T>(fn, "c_prev", c_prev_obj, {B, H}));
    else if (!c_prev_obj.is_none())
      throw py::value_error(std::string(fn) + ": c_prev must be None for a " + cell_kind_name(kind) + " cell");
    const T* bias = optional_cptr<T>(fn, "bias", bias_obj, {G * H}, keep_b);
    const T* b_hn = nullptr;
    if (Cell::kSavesHn) b_hn = optional_cptr<T>(fn, "b_hn", b_hn_obj, {H}, keep_bhn);
    else if (!b_hn_obj.is_none())
      throw py::value_error(std::string(fn) + ": b_hn must be None for a " + cell_kind_name(kind) + " cell");
    py::array_t<T> g = copy_of<T>(gates), h = zeros<T>(B, H), c = zeros<T>(B, H), hn = zeros<T>(B, H);
    T* pg = g.mutable_data();
    T* ph = h.mutable_data();
    T* pc = c.mutable_data();
    T* phn = hn.mutable_data();
    const T* phg = cptr<T>(hg);
    const T* php = cptr<T>(h_prev);
    double seconds = 0;
    {
      py::gil_scoped_release release;
      auto step = [&] {
        for (index_t b = 0; b < B; ++b) {
          CellStep<T> st;
          st.gates = pg + b * G * H;
          st.hg = phg + b * G * n;
          st.bias = bias;
          st.b_hn = b_hn;
          st.h_prev = php + b * H;
          st.h = ph + b * H;
          if (Cell::kHasCellState) {
            st.c_prev = c_prev + b * H;
            st.c = pc + b * H;
          }
          if (Cell::kSavesHn) st.hn = phn + b * H;
          Cell::forward_with(k, st, H, lo, hi);
        }
      };
      seconds = timed(repeat, [&] { restore_from<T>(g, gates); }, step);
    }
    py::dict out;
    out["gates"] = g;
    out["h"] = h;
    if (Cell::kHasCellState) out["c"] = c;
    if (Cell::kSavesHn) out["hn"] = hn;
    out["seconds"] = seconds;
    return out;
  });
}

template <typename T>
py::dict backward_py(const char* fn, CellKind kind, const py::array& gates_in, const py::handle& h_prev_obj,
                     const py::handle& h_obj, const py::handle& dh_carry_obj, const py::handle& dy_obj,
                     const py::handle& c_prev_obj, const py::handle& c_obj, const py::handle& hn_obj,
                     const py::handle& dc_obj, const FusedCellKernels* k, const py::handle& units, int repeat) {
  return with_cell(kind, [&](auto tag) {
    using Cell = typename decltype(tag)::template type<T>;
    constexpr int G = Cell::G;
    const py::array h_prev = checked<T>(fn, "h_prev", h_prev_obj, {-1, -1});
    const index_t B = h_prev.shape(0), H = h_prev.shape(1);
    const py::array gates = checked<T>(fn, "gates", gates_in, {B, checked_mul(fn, "G*H", G, H)});
    const py::array h = checked<T>(fn, "h", h_obj, {B, H});
    const py::array dh_carry = checked<T>(fn, "dh_carry", dh_carry_obj, {B, H});
    index_t lo, hi;
    parse_units(fn, units, H, &lo, &hi);
    py::array keep_dy;
    const T* dy = optional_cptr<T>(fn, "dy", dy_obj, {B, H}, keep_dy);
    py::array c_prev, c, hn_in, dc_in;
    auto must_be_none = [&](const char* name, const py::handle& obj) {
      if (!obj.is_none())
        throw py::value_error(std::string(fn) + ": " + name + " must be None for a " + cell_kind_name(kind) + " cell");
    };
    if (Cell::kHasCellState) {
      c_prev = checked<T>(fn, "c_prev", c_prev_obj, {B, H});
      c = checked<T>(fn, "c", c_obj, {B, H});
      dc_in = checked<T>(fn, "dc", dc_obj, {B, H});
    } else {
      must_be_none("c_prev", c_prev_obj);
      must_be_none("c", c_obj);
      must_be_none("dc", dc_obj);
    }
    if (Cell::kSavesHn) hn_in = checked<T>(fn, "hn", hn_obj, {B, H});
    else must_be_none("hn", hn_obj);
    py::array_t<T> g = copy_of<T>(gates), dhc = copy_of<T>(dh_carry);
    py::array_t<T> dc = Cell::kHasCellState ? copy_of<T>(dc_in) : zeros<T>(0, 0);
    py::array_t<T> hn = Cell::kSavesHn ? copy_of<T>(hn_in) : zeros<T>(0, 0);
    std::vector<T> scratch(static_cast<std::size_t>(hi - lo));
    T* pg = g.mutable_data();
    T* pdhc = dhc.mutable_data();
    T* pdc = Cell::kHasCellState ? dc.mutable_data() : nullptr;
    T* phn = Cell::kSavesHn ? hn.mutable_data() : nullptr;
    const T* php = cptr<T>(h_prev);
    const T* ph = cptr<T>(h);
    const T* pcp = Cell::kHasCellState ? cptr<T>(c_prev) : nullptr;
    const T* pc = Cell::kHasCellState ? cptr<T>(c) : nullptr;
    double seconds = 0;
    {
      py::gil_scoped_release release;
      auto restore = [&] {
        restore_from<T>(g, gates);
        restore_from<T>(dhc, dh_carry);
        if (Cell::kHasCellState) restore_from<T>(dc, dc_in);
        if (Cell::kSavesHn) restore_from<T>(hn, hn_in);
      };
      auto step = [&] {
        for (index_t b = 0; b < B; ++b) {
          CellGradStep<T> st;
          st.gates = pg + b * G * H;
          st.h_prev = php + b * H;
          st.h = ph + b * H;
          if (Cell::kHasCellState) {
            st.c_prev = pcp + b * H;
            st.c = pc + b * H;
            st.dc = pdc + b * H;
          }
          if (Cell::kSavesHn) st.hn = phn + b * H;
          st.dh_carry = pdhc + b * H;
          st.dy = dy ? dy + b * H : nullptr;
          st.scratch = scratch.data();
          Cell::backward_with(k, st, H, lo, hi);
        }
      };
      seconds = timed(repeat, restore, step);
    }
    py::dict out;
    out["gates"] = g;
    out["dh_carry"] = dhc;
    if (Cell::kHasCellState) out["dc"] = dc;
    if (Cell::kSavesHn) out["hn"] = hn;
    out["seconds"] = seconds;
    return out;
  });
}

}  // namespace

void bind_cells(py::module_& m) {
  m.def("cells_kernel", [] { return std::string(fused_cells_kernel()); },
        "The fused float32 cell kernels of this process: 'avx512', 'avx2' or 'generic' (the cells' portable "
        "loops), those of isa().");
  m.def(
      "cell_forward_test",
      [](const std::string& cell, const py::object& gates, const py::object& hg, const py::object& h_prev,
         const py::object& c_prev, const py::object& bias, const py::object& b_hn, const py::object& kernel,
         const py::object& units, int repeat) {
        const char* fn = "cell_forward_test";
        const CellKind kind = parse_cell(fn, cell);
        checked_repeat(fn, repeat);
        return dispatch_float(fn, "gates", gates, [&](auto zero) {
          using T = decltype(zero);
          const FusedCellKernels* k = nullptr;
          parse_kernel(fn, kernel, std::is_same<T, float>::value, &k);
          return forward_py<T>(fn, kind, checked<T>(fn, "gates", gates, any_shape(gates)),
                               checked<T>(fn, "hg", hg, any_shape(hg)), h_prev, c_prev, bias, b_hn, k, units, repeat);
        });
      },
      py::arg("cell"), py::arg("gates"), py::arg("hg"), py::arg("h_prev"), py::arg("c_prev") = py::none(),
      py::arg("bias") = py::none(), py::arg("b_hn") = py::none(), py::arg("kernel") = py::none(),
      py::arg("units") = py::none(), py::arg("repeat") = 1,
      "Test hook: one forward step of a cell on every row, on the kernel set `kernel` (see _core.pyi).");
  m.def(
      "cell_backward_test",
      [](const std::string& cell, const py::object& gates, const py::object& h_prev, const py::object& h,
         const py::object& dh_carry, const py::object& dy, const py::object& c_prev, const py::object& c,
         const py::object& hn, const py::object& dc, const py::object& kernel, const py::object& units, int repeat) {
        const char* fn = "cell_backward_test";
        const CellKind kind = parse_cell(fn, cell);
        checked_repeat(fn, repeat);
        return dispatch_float(fn, "gates", gates, [&](auto zero) {
          using T = decltype(zero);
          const FusedCellKernels* k = nullptr;
          parse_kernel(fn, kernel, std::is_same<T, float>::value, &k);
          return backward_py<T>(fn, kind, checked<T>(fn, "gates", gates, any_shape(gates)), h_prev, h, dh_carry, dy,
                                c_prev, c, hn, dc, k, units, repeat);
        });
      },
      py::arg("cell"), py::arg("gates"), py::arg("h_prev"), py::arg("h"), py::arg("dh_carry"),
      py::arg("dy") = py::none(), py::arg("c_prev") = py::none(), py::arg("c") = py::none(),
      py::arg("hn") = py::none(), py::arg("dc") = py::none(), py::arg("kernel") = py::none(),
      py::arg("units") = py::none(), py::arg("repeat") = 1,
      "Test hook: one backward step of a cell on every row, on the kernel set `kernel` (see _core.pyi).");
}

}  // namespace rnncore
