// _core int8 functions (csrc/quant/int8.h): weight and activation quantization and the product
// kernels, for rnncore.quant and its tests. The decoding loop's int8 weights go through
// _core.LMDecoder (bind_generate.cpp).
#include <algorithm>
#include <string>

#include "bindings/arrays.h"
#include "common/parallel.h"
#include "quant/bf16.h"
#include "quant/bf16_gemm.h"
#include "quant/int8.h"

namespace rnncore {

namespace {

void check_cols(const char* fn, index_t K) {
  if (K > kMaxInt8K)
    throw py::value_error(std::string(fn) + ": rows of " + std::to_string(K) + " values are more than the int32 "
                          "sums hold (at most " + std::to_string(kMaxInt8K) + ")");
}

Int8Matrix packed(const char* fn, const py::object& q_obj, const py::object& scale_obj, index_t K) {
  py::array q = checked<std::int8_t>(fn, "q", q_obj, {-1, K});
  py::array s = checked<float>(fn, "scale", scale_obj, {q.shape(0)});
  check_cols(fn, q.shape(1));
  Int8Matrix m;
  m.pack(q.shape(0), q.shape(1), cptr<std::int8_t>(q), q.shape(1), cptr<float>(s));
  return m;
}

Bf16Matrix packed_bf16(const char* fn, const py::object& w_obj, index_t K) {
  py::array w = checked<std::uint16_t>(fn, "w", w_obj, {-1, K});
  Bf16Matrix m;
  m.pack(w.shape(0), w.shape(1), cptr<std::uint16_t>(w), w.shape(1));
  return m;
}

}  // namespace

void bind_quant(py::module_& m) {
  m.def("int8_kernel", &int8_kernel_name,
        "The int8 product kernel this process runs: vnni512, avx2 or generic (chosen by RNNCORE_ISA and the CPU).");
  m.def(
      "quantize_rows_s8",
      [](const py::object& w_obj) {
        const char* fn = "quantize_rows_s8";
        py::array w = checked<float>(fn, "w", w_obj, {-1, -1});
        const index_t N = w.shape(0), K = w.shape(1);
        py::array_t<std::int8_t> q({N, K});
        py::array_t<float> scale({N});
        std::int8_t* pq = q.mutable_data();
        float* ps = scale.mutable_data();
        const float* pw = cptr<float>(w);
        {
          py::gil_scoped_release release;
          quantize_rows_s8(N, K, pw, K, pq, K, ps);
        }
        return py::make_tuple(q, scale);
      },
      py::arg("w"),
      "Symmetric per-row int8 quantization of w float32 (N, K): (q int8 (N, K), scale float32 (N,)), "
      "q = clamp(round(w / scale), -127, 127), scale = max |row| / 127 (1 for a zero row). ValueError for a row "
      "holding NaN or an infinity.");
  m.def(
      "quantize_u8",
      [](const py::object& x_obj) {
        py::array x = checked<float>("quantize_u8", "x", x_obj, {-1});
        py::array_t<std::uint8_t> xq({x.shape(0)});
        const U8Params p = quantize_u8(x.shape(0), cptr<float>(x), xq.mutable_data());
        return py::make_tuple(xq, p.scale, p.zero_point);
      },
      py::arg("x"),
      "Dynamic u8 quantization of x float32 (K,) (ONNX's DynamicQuantizeLinear): (xq uint8 (K,), scale, "
      "zero_point).");
  m.def(
      "int8_gemv_acc",
      [](const py::object& q, const py::object& xq_obj) {
        const char* fn = "int8_gemv_acc";
        py::array xq = checked<std::uint8_t>(fn, "xq", xq_obj, {-1});
        const index_t K = xq.shape(0);
        py::array qa = checked<std::int8_t>(fn, "q", q, {-1, K});
        py::array_t<float> ones({qa.shape(0)});
        std::fill(ones.mutable_data(), ones.mutable_data() + qa.shape(0), 1.0f);
        const Int8Matrix mat = packed(fn, q, ones, K);
        AlignedBuffer<std::uint8_t> x(mat.xq_size());
        std::copy(cptr<std::uint8_t>(xq), cptr<std::uint8_t>(xq) + K, x.data());
        for (index_t k = K; k < mat.xq_size(); ++k) x.data()[k] = 0;
        AlignedBuffer<std::int32_t> acc(mat.acc_size());
        mat.gemv_acc(x.data(), acc.data());
        py::array_t<std::int32_t> out({mat.rows()});
        std::copy(acc.data(), acc.data() + mat.rows(), out.mutable_data());
        return out;
      },
      py::arg("q"), py::arg("xq"), "The exact int32 sums q int8 (N, K) @ xq uint8 (K,) of this process's kernel.");
  m.def(
      "int8_gemv",
      [](const py::object& q, const py::object& scale, const py::object& x_obj) {
        const char* fn = "int8_gemv";
        py::array x = checked<float>(fn, "x", x_obj, {-1});
        const Int8Matrix mat = packed(fn, q, scale, x.shape(0));
        AlignedBuffer<std::uint8_t> xq(mat.xq_size());
        AlignedBuffer<std::int32_t> acc(mat.acc_size());
        py::array_t<float> y({mat.rows()});
        mat.gemv(cptr<float>(x), y.mutable_data(), 0.0f, xq.data(), acc.data());
        return y;
      },
      py::arg("q"), py::arg("scale"), py::arg("x"),
      "y (N,) = the int8 product of the quantized weight (q int8 (N, K), scale float32 (N,)) with x float32 (K,), "
      "x quantized dynamically to u8 (the decoding loop's product).");
  m.def("bf16_kernel", &bf16_kernel_name,
        "The bf16 product kernel this process runs: avx512bf16, avx2 or generic (chosen by RNNCORE_ISA and the CPU).");
  m.def(
      "to_bf16",
      [](const py::object& x_obj) {
        py::array x = checked<float>("to_bf16", "x", x_obj, any_shape(x_obj));
        py::array_t<std::uint16_t> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
        to_bf16(static_cast<index_t>(x.size()), cptr<float>(x), out.mutable_data());
        return out;
      },
      py::arg("x"), "float32 -> bf16 bits (uint16), rounded to nearest even; denormals become signed zeros.");
  m.def("gemm_bf16_kernel", &gemm_bf16_kernel_name,
        "The bf16 GEMM kernel this process runs: avx512bf16 (vdpbf16ps), avx2 or generic (chosen by RNNCORE_ISA "
        "and the CPU).");
  m.def(
      "gemm_bf16",
      [](const py::object& a_obj, const py::object& b_obj, bool trans_a, bool trans_b, py::object c_obj, double beta,
         const py::object& threads_obj, bool per_step) {
        const char* fn = "gemm_bf16";
        const int threads = checked_threads(fn, threads_obj);
        py::array a = checked<float>(fn, "a", a_obj, {-1, -1});
        py::array b = checked<float>(fn, "b", b_obj, {-1, -1});
        const index_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
        const index_t Kb = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
        if (Kb != K)
          throw py::value_error(std::string(fn) + ": op(a) is (" + std::to_string(M) + ", " + std::to_string(K) +
                                ") so op(b) must have " + std::to_string(K) + " rows, got b of shape " + shape_str(b) +
                                (trans_b ? " (transposed)" : ""));
        if (beta != 0.0 && beta != 1.0)
          throw py::value_error(std::string(fn) + ": beta must be 0 or 1, got " + std::to_string(beta));
        py::array c;
        if (c_obj.is_none()) {
          if (beta != 0.0) throw py::value_error(std::string(fn) + ": beta=1 needs c (the matrix to add to)");
          c = py::array_t<float>({M, N});
        } else {
          c = checked_writable<float>(fn, "c", c_obj, {M, N});
        }
        const float* pa = cptr<float>(a);
        const float* pb = cptr<float>(b);
        float* pc = mptr<float>(c);
        const index_t lda = a.shape(1), ldb = b.shape(1);
        if (per_step) {
          if (trans_a)
            throw py::value_error(std::string(fn) + ": per_step=True multiplies a step's (M, K) operand: trans_a "
                                  "must be False");
          Bf16PackedB packed_b;
          packed_b.reserve(K, N);
          AlignedBuffer<std::uint32_t> apack(bf16_apack_size(M, K));
          py::gil_scoped_release release;
          packed_b.fill(trans_b, pb, ldb);
          pack_a_bf16(M, K, pa, lda, apack.data());
          FlushToZeroGuard ftz;  // as the recurrent layers run it
          gemm_bf16_prepacked(M, apack.data(), packed_b, static_cast<float>(beta), pc, N);
          return c;
        }
        {
          py::gil_scoped_release release;
          gemm_bf16(trans_a, trans_b, M, N, K, pa, lda, pb, ldb, static_cast<float>(beta), pc, N, threads);
        }
        return c;
      },
      py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false, py::arg("c") = py::none(),
      py::arg("beta") = 0.0, py::arg("threads") = 1, py::arg("per_step") = false,
      "c (M, N) = op(a) @ op(b) (+ c when beta=1), a and b float32 rounded to bf16 as they are packed, float32 "
      "sums in vdpbf16ps's order (quant/bf16_gemm.h): the same bits on every kernel and thread count. "
      "per_step=True runs the recurrent layers' per-step product instead (op(b) packed once, a packed as a step's "
      "operand, one thread; the small-batch kernels below 8 rows): the same bits.");
  m.def(
      "round_bf16",
      [](const py::object& x_obj, py::object out_obj) {
        const char* fn = "round_bf16";
        py::array x = checked<float>(fn, "x", x_obj, any_shape(x_obj));
        std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
        py::array out;
        if (out_obj.is_none()) {
          out = py::array_t<float>(shape);
        } else {
          out = checked_writable<float>(fn, "out", out_obj, any_shape(x_obj));
          if (out.ndim() != x.ndim() || !std::equal(shape.begin(), shape.end(), out.shape()))
            throw py::value_error(std::string(fn) + ": out must have x's shape " + shape_str(x) + ", got " +
                                  shape_str(out));
        }
        const index_t n = static_cast<index_t>(x.size());
        const float* px = cptr<float>(x);
        float* po = mptr<float>(out);
        {
          py::gil_scoped_release release;
          round_bf16(n, px, po);
        }
        return out;
      },
      py::arg("x"), py::arg("out") = py::none(),
      "x float32 rounded to bfloat16 (nearest even) and widened back to float32: the value a bf16 operand has. "
      "out: a float32 array of x's shape to write (may be x itself), or None for a new one. Denormals become "
      "signed zeros, NaN stays NaN.");
  m.def(
      "bf16_gemv",
      [](const py::object& w, const py::object& x_obj) {
        const char* fn = "bf16_gemv";
        py::array x = checked<float>(fn, "x", x_obj, {-1});
        const Bf16Matrix mat = packed_bf16(fn, w, x.shape(0));
        AlignedBuffer<unsigned char> ws(mat.workspace_bytes());
        py::array_t<float> y({mat.rows()});
        FlushToZeroGuard ftz;  // as in the decoding loop
        mat.gemv(cptr<float>(x), y.mutable_data(), 0.0f, ws.data());
        return y;
      },
      py::arg("w"), py::arg("x"),
      "y (N,) = w (bf16 bits, uint16 (N, K)) @ x float32 (K,), x rounded to bf16, float32 sums in the order of "
      "csrc/quant/bf16.h (the decoding loop's product).");
}

}  // namespace rnncore
