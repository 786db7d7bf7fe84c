// _core.recurrent_forward / recurrent_backward and the workspace object that links them.
#include <atomic>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>

#include "bindings/arrays.h"
#include "recurrent/output_recurrent.h"
#include "recurrent/recurrent.h"

namespace rnncore {

namespace {

// What a forward saved for its backward. Holds the input array alive: when it is used in
// place (no gather) backward reads it again. One call at a time (`busy`, ExclusiveCall): a
// layer shared by two Python threads gets a RuntimeError, never a mix of two calls' buffers.
class Workspace {
 public:
  std::unique_ptr<RecurrentWorkspace<float>> f32;
  std::unique_ptr<RecurrentWorkspace<double>> f64;
  py::object x_ref;
  std::string cell;
  std::atomic<bool> busy{false};

  template <typename T>
  RecurrentWorkspace<T>& get();

  bool ready() const { return (f32 && f32->ready) || (f64 && f64->ready); }
  std::string dtype() const { return f64 ? "float64" : "float32"; }
};

template <>
RecurrentWorkspace<float>& Workspace::get<float>() {
  f64.reset();
  if (!f32) f32 = std::make_unique<RecurrentWorkspace<float>>();
  return *f32;
}
template <>
RecurrentWorkspace<double>& Workspace::get<double>() {
  f32.reset();
  if (!f64) f64 = std::make_unique<RecurrentWorkspace<double>>();
  return *f64;
}

// begin + n as text, without overflowing (for messages about a range that does not fit).
std::string end_str(index_t begin, index_t n) {
  if (begin > 0 && n > std::numeric_limits<index_t>::max() - begin) return std::to_string(begin) + " + " + std::to_string(n);
  return std::to_string(begin + n);
}

template <typename T>
py::tuple forward_impl(const std::string& cell, const py::array& x_obj, const py::object& w_ih_obj,
                       const py::object& w_hh_obj, const py::object& b_ih_obj, const py::object& b_hh_obj,
                       const py::object& h0_obj, const py::object& c0_obj, const py::object& lengths_obj, bool reverse,
                       py::object out_obj, index_t out_col, int threads, std::shared_ptr<Workspace> ws,
                       const py::object& w_hr_obj, bool bf16) {
  const char* fn = "recurrent_forward";
  if (bf16 && !std::is_same_v<T, float>)
    throw py::type_error(std::string(fn) + ": bf16=True needs float32 x and weights (the float32 master copy), "
                         "got float64");
  const CellKind kind = parse_cell(fn, cell);
  const index_t G = gate_count(kind);
  py::array x = checked<T>(fn, "x", x_obj, {-1, -1, -1});
  const index_t Tn = x.shape(0), B = x.shape(1), I = x.shape(2);
  py::array w_hh = checked<T>(fn, "w_hh", w_hh_obj, {-1, -1});
  index_t H = w_hh.shape(1), P = 0;
  py::array w_hr;
  if (!w_hr_obj.is_none()) {
    // An LSTM with projections: w_hr (P, H) gives both sizes; w_hh is then (G*H, P).
    if (kind != CellKind::LSTM)
      throw py::value_error(std::string(fn) + ": w_hr (projections) is only for lstm cells, got one for " +
                            cell_kind_name(kind));
    w_hr = checked<T>(fn, "w_hr", w_hr_obj, {-1, -1});
    P = w_hr.shape(0);
    H = w_hr.shape(1);
    if (P < 1 || P >= H)
      throw py::value_error(std::string(fn) + ": w_hr must have shape (P, H) with 0 < P < H (proj_size below "
                            "hidden_size), got " + shape_str(w_hr));
    if (w_hh.shape(0) != G * H || w_hh.shape(1) != P)
      throw py::value_error(std::string(fn) + ": w_hh must have shape (G*H, P) = (" + std::to_string(G * H) + ", " +
                            std::to_string(P) + ") for an lstm cell with w_hr of shape " + shape_str(w_hr) +
                            ", got " + shape_str(w_hh));
  } else if (w_hh.shape(0) != G * H) {
    throw py::value_error(std::string(fn) + ": w_hh must have shape (G*H, H) = (" + std::to_string(G * H) + ", " +
                          std::to_string(H) + ") for a " + cell_kind_name(kind) + " cell, got " + shape_str(w_hh));
  }
  const index_t R = P > 0 ? P : H;  // the width of h and of the outputs
  py::array w_ih = checked<T>(fn, "w_ih", w_ih_obj, {G * H, I});
  py::array b_ih, b_hh, h0, c0, lengths;
  const T* pb_ih = optional_cptr<T>(fn, "b_ih", b_ih_obj, {G * H}, b_ih);
  const T* pb_hh = optional_cptr<T>(fn, "b_hh", b_hh_obj, {G * H}, b_hh);
  const T* ph0 = optional_cptr<T>(fn, "h0", h0_obj, {B, R}, h0);
  if (kind != CellKind::LSTM && !c0_obj.is_none())
    throw py::value_error(std::string(fn) + ": c0 is only for lstm cells, got one for " + cell_kind_name(kind));
  const T* pc0 = optional_cptr<T>(fn, "c0", c0_obj, {B, H}, c0);
  const std::int64_t* plen = optional_cptr<std::int64_t>(fn, "lengths", lengths_obj, {B}, lengths);
  py::array out = checked_writable<T>(fn, "out", out_obj, {Tn, B, -1});
  const index_t ldy = out.shape(2);
  if (out_col < 0 || out_col > ldy - R) {  // not out_col + R > ldy: that can overflow
    throw py::value_error(std::string(fn) + ": out columns [out_col, out_col + " + (P > 0 ? "P" : "H") + ") = [" +
                          std::to_string(out_col) + ", " + end_str(out_col, R) +
                          ") must lie within out's last dimension " + std::to_string(ldy));
  }
  if (!ws) ws = std::make_shared<Workspace>();
  ExclusiveCall exclusive(ws->busy, fn, "workspace (its layer)");
  RecurrentWorkspace<T>& w = ws->get<T>();
  ws->x_ref = x;
  ws->cell = cell_kind_name(kind);
  py::array_t<T> hn({B, R}), cn;
  T* pcn = nullptr;
  if (kind == CellKind::LSTM) {
    cn = py::array_t<T>({B, H});
    pcn = cn.mutable_data();
  }
  T* phn = hn.mutable_data();
  T* py = mptr<T>(out) + out_col;
  {
    py::gil_scoped_release release;
    recurrent_forward<T>(w, {kind, Tn, B, I, H, P},
                         {cptr<T>(w_ih), cptr<T>(w_hh), pb_ih, pb_hh, P > 0 ? cptr<T>(w_hr) : nullptr},
                         {cptr<T>(x), ph0, pc0, plen, reverse, py, ldy, phn, pcn, bf16}, threads);
  }
  return py::make_tuple(hn, kind == CellKind::LSTM ? py::object(cn) : py::object(py::none()), ws);
}

template <typename T>
py::tuple backward_impl(Workspace& wsp, const py::object& dy_obj, index_t dy_col, const py::object& dhn_obj,
                        const py::object& dcn_obj, const py::object& w_ih_obj, const py::object& w_hh_obj,
                        py::object dw_ih_obj, py::object dw_hh_obj, py::object db_ih_obj, py::object db_hh_obj,
                        py::object dx_obj, bool accumulate_dx, int threads, const py::object& w_hr_obj,
                        py::object dw_hr_obj, py::object grad_norms_obj) {
  const char* fn = "recurrent_backward";
  RecurrentWorkspace<T>& w = wsp.get<T>();
  const index_t Tn = w.steps, B = w.B, I = w.I, H = w.H, G = gate_count(w.kind), P = w.P;
  const index_t R = P > 0 ? P : H;
  const char* width = P > 0 ? "P" : "H";
  const bool lstm = w.kind == CellKind::LSTM;
  py::array dy, dhn, dcn, db_ih, db_hh;
  const T* pdy = nullptr;
  index_t lddy = 0;
  if (!dy_obj.is_none()) {
    dy = checked<T>(fn, "dy", dy_obj, {Tn, B, -1});
    lddy = dy.shape(2);
    if (dy_col < 0 || dy_col > lddy - R) {  // not dy_col + R > lddy: that can overflow
      throw py::value_error(std::string(fn) + ": dy columns [dy_col, dy_col + " + width + ") = [" +
                            std::to_string(dy_col) + ", " + end_str(dy_col, R) +
                            ") must lie within dy's last dimension " + std::to_string(lddy));
    }
    pdy = cptr<T>(dy) + dy_col;
  }
  const T* pdhn = optional_cptr<T>(fn, "dh_n", dhn_obj, {B, R}, dhn);
  if (!lstm && !dcn_obj.is_none())
    throw py::value_error(std::string(fn) + ": dc_n is only for lstm cells, got one for " + wsp.cell);
  const T* pdcn = optional_cptr<T>(fn, "dc_n", dcn_obj, {B, H}, dcn);
  py::array w_ih = checked<T>(fn, "w_ih", w_ih_obj, {G * H, I});
  py::array w_hh = checked<T>(fn, "w_hh", w_hh_obj, {G * H, R});
  py::array dw_ih = checked_writable<T>(fn, "dw_ih", dw_ih_obj, {G * H, I});
  py::array dw_hh = checked_writable<T>(fn, "dw_hh", dw_hh_obj, {G * H, R});
  py::array w_hr, dw_hr;
  if (P > 0) {
    if (w_hr_obj.is_none() || dw_hr_obj.is_none())
      throw py::value_error(std::string(fn) + ": the forward had projections (w_hr of shape (P, H) = (" +
                            std::to_string(P) + ", " + std::to_string(H) + ")): w_hr and dw_hr are required");
    w_hr = checked<T>(fn, "w_hr", w_hr_obj, {P, H});
    dw_hr = checked_writable<T>(fn, "dw_hr", dw_hr_obj, {P, H});
  } else if (!w_hr_obj.is_none() || !dw_hr_obj.is_none()) {
    throw py::value_error(std::string(fn) + ": w_hr and dw_hr are only for a forward with projections (it had none)");
  }
  T* pdb_ih = nullptr;
  T* pdb_hh = nullptr;
  if (!db_ih_obj.is_none()) {
    db_ih = checked_writable<T>(fn, "db_ih", db_ih_obj, {G * H});
    pdb_ih = mptr<T>(db_ih);
  }
  if (!db_hh_obj.is_none()) {
    db_hh = checked_writable<T>(fn, "db_hh", db_hh_obj, {G * H});
    pdb_hh = mptr<T>(db_hh);
  }
  py::array dx = checked_writable<T>(fn, "dx", dx_obj, {Tn, B, I});
  py::array grad_norms;
  double* pgn = nullptr;
  if (!grad_norms_obj.is_none()) {
    grad_norms = checked_writable<double>(fn, "grad_norms", grad_norms_obj, {Tn, B});
    pgn = mptr<double>(grad_norms);
  }
  py::array_t<T> dh0({B, R}), dc0;
  T* pdc0 = nullptr;
  if (lstm) {
    dc0 = py::array_t<T>({B, H});
    pdc0 = dc0.mutable_data();
  }
  T* pdh0 = dh0.mutable_data();
  {
    py::gil_scoped_release release;
    recurrent_backward<T>(w, {cptr<T>(w_ih), cptr<T>(w_hh), nullptr, nullptr, P > 0 ? cptr<T>(w_hr) : nullptr},
                          {mptr<T>(dw_ih), mptr<T>(dw_hh), pdb_ih, pdb_hh, P > 0 ? mptr<T>(dw_hr) : nullptr},
                          {pdy, lddy, pdhn, pdcn, mptr<T>(dx), accumulate_dx, pdh0, pdc0, pgn}, threads);
  }
  wsp.x_ref = py::none();
  return py::make_tuple(dh0, lstm ? py::object(dc0) : py::object(py::none()));
}

// ---- the output-recurrent network, free running (issue 14) -----------------------------------

template <typename T>
py::array output_recurrent_free_run_py(const py::object& x_obj, const py::object& w_ih_obj, const py::object& w_oh_obj,
                                       const py::object& b_h_obj, const py::object& w_ho_obj,
                                       const py::object& b_o_obj, const py::object& y0_obj, int threads) {
  const char* fn = "output_recurrent_free_run";
  py::array w_ih = checked<T>(fn, "w_ih", w_ih_obj, {-1, -1});
  const index_t H = w_ih.shape(0), I = w_ih.shape(1);
  py::array w_oh = checked<T>(fn, "w_oh", w_oh_obj, {H, -1});
  const index_t O = w_oh.shape(1);
  py::array w_ho = checked<T>(fn, "w_ho", w_ho_obj, {O, H});
  py::array x = checked<T>(fn, "x", x_obj, {-1, -1, I});
  const index_t steps = x.shape(0), B = x.shape(1);
  py::array b_h, b_o, y0;
  const T* pb_h = optional_cptr<T>(fn, "b_h", b_h_obj, {H}, b_h);
  const T* pb_o = optional_cptr<T>(fn, "b_o", b_o_obj, {O}, b_o);
  const T* py0 = optional_cptr<T>(fn, "y0", y0_obj, {B, O}, y0);
  const index_t BH = checked_mul(fn, "B * H", B, H);
  checked_mul(fn, "T * B * H", steps, BH);
  py::array_t<T> y({steps, B, O});
  std::vector<T> h(static_cast<std::size_t>(steps * BH)), scratch(static_cast<std::size_t>(BH));
  {
    py::gil_scoped_release release;
    output_recurrent_free_run<T>(y.mutable_data(), h.data(), scratch.data(), cptr<T>(x), cptr<T>(w_ih),
                                 cptr<T>(w_oh), pb_h, cptr<T>(w_ho), pb_o, py0, steps, B, I, H, O, threads);
  }
  return y;
}

}  // namespace

void bind_recurrent(py::module_& m) {
  m.def(
      "output_recurrent_free_run",
      [](const py::object& x, const py::object& w_ih, const py::object& w_oh, const py::object& b_h,
         const py::object& w_ho, const py::object& b_o, const py::object& y0, const py::object& threads_obj) {
        const int threads = checked_threads("output_recurrent_free_run", threads_obj);
        return dispatch_float("output_recurrent_free_run", "w_ih", w_ih, [&](auto zero) {
          return output_recurrent_free_run_py<decltype(zero)>(x, w_ih, w_oh, b_h, w_ho, b_o, y0, threads);
        });
      },
      py::arg("x"), py::arg("w_ih"), py::arg("w_oh"), py::arg("b_h"), py::arg("w_ho"),
      py::arg("b_o") = py::none(), py::arg("y0") = py::none(), py::arg("threads") = 1,
      R"doc(The output-recurrent network (Goodfellow et al. fig. 10.4) run free on its own outputs.

h_t = tanh(w_ih x_t + w_oh y_{t-1} + b_h), y_t = w_ho h_t + b_o, y_{-1} = y0 (None: zeros).
x (T, B, I); w_ih (H, I); w_oh (H, O); b_h (H,) or None; w_ho (O, H); b_o (O,) or None;
y0 (B, O) or None. Returns y (T, B, O). One input GEMM over all steps, then two thin GEMMs a step.)doc");

  py::class_<Workspace, std::shared_ptr<Workspace>>(m, "RecurrentWorkspace",
                                                    "What a recurrent forward saved for its backward (opaque).")
      .def(py::init<>())
      .def_property_readonly("ready", &Workspace::ready, "True after a forward whose backward has not run yet.")
      .def_property_readonly("dtype", &Workspace::dtype)
      .def_readonly("cell", &Workspace::cell)
      .def_property_readonly(
          "proj_size", [](const Workspace& ws) { return ws.f64 ? ws.f64->P : ws.f32 ? ws.f32->P : index_t(0); },
          "P of the last forward with projections (w_hr), else 0.")
      .def(
          "trim",
          [](Workspace& ws) {
            ExclusiveCall exclusive(ws.busy, "RecurrentWorkspace.trim", "workspace (its layer)");
            if (ws.f32) ws.f32->trim();
            if (ws.f64) ws.f64->trim();
          },
          "Free what only the calls themselves use (each thread's packed copy of w_hh, scratch), keeping what "
          "backward needs; for callers that hold many workspaces at once (single-step cells). The next call "
          "allocates them again.");

  m.def(
      "recurrent_forward",
      [](const std::string& cell, const py::array& x, const py::object& w_ih, const py::object& w_hh,
         const py::object& b_ih, const py::object& b_hh, const py::object& h0, const py::object& c0,
         const py::object& lengths, bool reverse, py::object out, index_t out_col, const py::object& threads_obj,
         std::shared_ptr<Workspace> workspace, const py::object& w_hr, bool bf16) {
        const int threads = checked_threads("recurrent_forward", threads_obj);
        return dispatch_float("recurrent_forward", "x", x, [&](auto zero) {
          return forward_impl<decltype(zero)>(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, out, out_col,
                                              threads, workspace, w_hr, bf16);
        });
      },
      py::arg("cell"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih") = py::none(),
      py::arg("b_hh") = py::none(), py::arg("h0") = py::none(), py::arg("c0") = py::none(),
      py::arg("lengths") = py::none(), py::arg("reverse") = false, py::arg("out") = py::none(),
      py::arg("out_col") = 0, py::arg("threads") = 1, py::arg("workspace") = nullptr, py::arg("w_hr") = py::none(),
      py::arg("bf16") = false,
      R"doc(One recurrent layer, one direction, over a whole sequence.

x (T, B, I); w_ih (G*H, I); w_hh (G*H, H); b_ih, b_hh (G*H,) or None; h0, c0 (B, H) or None;
lengths int64 (B,) in [0, T] or None; out (T, B, *) receives the outputs in columns
[out_col, out_col + H), zero past each length. A reverse layer runs each sequence backwards
within its own length. Returns (h_n, c_n or None, workspace).

LSTM with projections (PyTorch's proj_size): w_hr (P, H), 0 < P < H; then w_hh is (G*H, P),
h0 and h_n are (B, P), the outputs fill columns [out_col, out_col + P); c0, c_n stay (B, H).

bf16=True (float32 only): bfloat16 mixed precision (recurrent/recurrent.h): every product's operands
(weights, x, h0, each new h) rounded to bf16, float32 sums, float32 cell state; the outputs and h_n
come out bf16-valued. Its backward rounds the gradients that enter products.)doc");

  m.def(
      "recurrent_backward",
      [](std::shared_ptr<Workspace> ws, const py::object& dy, index_t dy_col, const py::object& dh_n,
         const py::object& dc_n, const py::object& w_ih, const py::object& w_hh, py::object dw_ih, py::object dw_hh,
         py::object db_ih, py::object db_hh, py::object dx, bool accumulate_dx, const py::object& threads_obj,
         const py::object& w_hr, py::object dw_hr, py::object grad_norms) {
        const int threads = checked_threads("recurrent_backward", threads_obj);
        if (!ws) throw py::type_error("recurrent_backward: workspace must be a RecurrentWorkspace, got None");
        ExclusiveCall exclusive(ws->busy, "recurrent_backward", "workspace (its layer)");
        if (!ws->ready())
          throw py::value_error(
              "recurrent_backward: the workspace holds no forward to differentiate (run forward first; "
              "each forward can be differentiated once)");
        if (ws->f64) {
          if (!has_dtype<double>(dw_ih))
            throw py::type_error("recurrent_backward: dw_ih must have dtype float64 (the forward's), got " +
                                 (py::isinstance<py::array>(dw_ih) ? dtype_str(dw_ih) : std::string("a non-array")));
          return backward_impl<double>(*ws, dy, dy_col, dh_n, dc_n, w_ih, w_hh, dw_ih, dw_hh, db_ih, db_hh, dx,
                                       accumulate_dx, threads, w_hr, dw_hr, grad_norms);
        }
        return backward_impl<float>(*ws, dy, dy_col, dh_n, dc_n, w_ih, w_hh, dw_ih, dw_hh, db_ih, db_hh, dx,
                                    accumulate_dx, threads, w_hr, dw_hr, grad_norms);
      },
      py::arg("workspace"), py::arg("dy"), py::arg("dy_col") = 0, py::arg("dh_n") = py::none(),
      py::arg("dc_n") = py::none(), py::arg("w_ih"), py::arg("w_hh"), py::arg("dw_ih"), py::arg("dw_hh"),
      py::arg("db_ih") = py::none(), py::arg("db_hh") = py::none(), py::arg("dx"), py::arg("accumulate_dx") = false,
      py::arg("threads") = 1, py::arg("w_hr") = py::none(), py::arg("dw_hr") = py::none(),
      py::arg("grad_norms") = py::none(),
      R"doc(Backpropagation through time for the last forward run on `workspace`.

dy (T, B, *) gradient of the outputs, read from columns [dy_col, dy_col + H), or None;
dh_n, dc_n (B, H) or None. Adds into dw_ih, dw_hh, db_ih, db_hh; writes dx (T, B, I), or adds
to it when accumulate_dx. Returns (dh0, dc0 or None).

After a forward with projections (w_hr (P, H)): w_hr and dw_hr (P, H) are required (dw_hr is
added to), w_hh and dw_hh are (G*H, P), dy is read from P columns, dh_n and dh0 are (B, P).

grad_norms: float64 (T, B) or None; overwritten with ||dL/dh_t|| of each sequence from the
sweep itself (dy_t plus the carry from t+1; the P-wide h with projections), 0 where t >= length.)doc");
}

}  // namespace rnncore
