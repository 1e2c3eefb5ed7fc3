// The CPU GEMM path. Each operand is decoded, tile by tile, into BF16 values that are *exact*: the element
// times its block scale, with the scale's power of two (or NVFP4's E4M3 block scale, whose product with an
// E2M1 value has at most 6 significant bits) folded in, and every tensor-wide factor (FP8 per-tensor
// scale_inv, NVFP4's global decode scale, a common power of two) pulled out into one FP32 `alpha` applied
// after accumulation. BF16 x BF16 products are exact in FP32, so the result equals an FP32-accumulated GEMM
// of the dequantized operands. Scales that cannot be folded exactly (FP32 block scales that are not powers
// of two) take a slower FP32 path over row panels.
#include "core/gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/cpu/gemm_bf16.h"
#include "precision/error.h"
#include "precision/format_names.h"
#include "precision/scaling.h"

namespace nibble::nn {
namespace {

using precision::Scheme;

uint16_t float_to_bf16_rne(float f) {
  return static_cast<uint16_t>(precision::encode_scalar(f, precision::formats::kBF16,
                                                        precision::Rounding::kNearestEven));
}

uint16_t float_to_bf16_exact(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>(u >> 16);  // callers guarantee the low 16 bits are zero
}

int block_cols(Scheme s) {
  switch (s) {
    case Scheme::kFP8Tensor: return 0;
    case Scheme::kFP8Block128:
    case Scheme::kFP8Block128x128: return 128;
    case Scheme::kNVFP4:
    case Scheme::kNVFP4_2D: return 16;
    default: return 32;
  }
}

// How one operand decodes: code -> element value (LUT), times fold[row][k / block], times alpha overall.
struct DecodePlan {
  const GemmOperand* op = nullptr;
  float lut[256];
  int block = 0;             // block length along K (0 = one scale for the tensor)
  int64_t fold_cols = 0;
  std::vector<float> fold;   // rows x fold_cols; empty = 1
  double alpha = 1.0;
  bool exact_bf16 = true;    // value * fold is exactly representable (and normal) in BF16
  bool fp4 = false;
};

float decode_scale(const QuantizedCopyTensor& c, const precision::QuantizeOptions& o, int64_t r, int64_t kb) {
  switch (o.scheme) {
    case Scheme::kFP8Block128: return c.scale.data_ptr<float>()[r * c.scale.size(1) + kb];
    case Scheme::kFP8Block128x128: return c.scale.data_ptr<float>()[(r / 128) * c.scale.size(1) + kb];
    case Scheme::kNVFP4:
    case Scheme::kNVFP4_2D:
      return precision::decode_scalar(c.scale.data_ptr<uint8_t>()[r * c.scale.size(1) + kb], precision::formats::kE4M3);
    default: return precision::e8m0_decode_multiplier(c.scale.data_ptr<uint8_t>()[r * c.scale.size(1) + kb]);
  }
}

DecodePlan plan_for(const GemmOperand& op) {
  DecodePlan p;
  p.op = &op;
  if (!op.copy) return p;
  const QuantizedCopyTensor& c = *op.copy;
  const precision::QuantizeOptions& o = op.options;
  p.fp4 = o.element.bits() <= 4;
  for (uint32_t code = 0; code < (p.fp4 ? 16u : 256u); ++code) p.lut[code] = precision::decode_scalar(code, o.element);
  p.block = block_cols(o.scheme);
  if (o.scheme == Scheme::kFP8Tensor) {
    p.alpha = c.scale.data_ptr<float>()[0];
    return p;
  }
  p.fold_cols = (c.cols + p.block - 1) / p.block;
  p.fold.resize(static_cast<size_t>(c.rows * p.fold_cols));
  const bool nvfp4 = o.scheme == Scheme::kNVFP4 || o.scheme == Scheme::kNVFP4_2D;
  int ref_exp = -1000;
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t kb = 0; kb < p.fold_cols; ++kb) {
      const float s = decode_scale(c, o, r, kb);
      p.fold[r * p.fold_cols + kb] = s;
      if (s > 0) ref_exp = std::max(ref_exp, std::ilogb(s));
      if (!nvfp4 && s > 0 && std::ldexp(1.0f, std::ilogb(s)) != s) p.exact_bf16 = false;  // not a power of two
    }
  if (nvfp4) {
    p.alpha = 1.0 / precision::nvfp4_global_encode_scale(c.global_amax.item<float>());
    return p;  // E2M1 x E4M3 products have <= 6 significant bits, >= 2^-10: exact BF16 normals
  }
  if (!p.exact_bf16 || ref_exp == -1000) return p;
  // Pull the largest power of two out into alpha; the smallest nonzero element of the format times the
  // remaining fold must stay a BF16 normal (the hardware flushes BF16 subnormals), else use the FP32 path.
  const float min_element = precision::decode_scalar(1u, o.element);
  p.alpha = std::ldexp(1.0, ref_exp);
  for (float& f : p.fold) {
    f = std::ldexp(f, -ref_exp);
    if (f > 0 && f * min_element < 1.1754944e-38f) p.exact_bf16 = false;
  }
  return p;
}

uint32_t code_at(const DecodePlan& p, int64_t r, int64_t k) {
  const QuantizedCopyTensor& c = *p.op->copy;
  const uint8_t* row = c.data.data_ptr<uint8_t>() + r * c.data.size(1);
  return p.fp4 ? (row[k / 2] >> ((k % 2) * 4)) & 0xFu : row[k];
}

// Element (r, k) of the operand, dequantized except for alpha, in FP32.
float value_at(const DecodePlan& p, int64_t r, int64_t k) {
  const float v = p.lut[code_at(p, r, k)];
  return p.fold.empty() ? v : v * p.fold[r * p.fold_cols + k / p.block];
}

cpu::RowSource bf16_source(const DecodePlan& p) {
  const GemmOperand& op = *p.op;
  if (!op.copy) {
    const torch::Tensor& d = op.dense;
    if (d.scalar_type() == torch::kBFloat16) {
      const auto* base = reinterpret_cast<const uint16_t*>(d.data_ptr());
      const int64_t ld = d.size(1);
      return [base, ld](int64_t r0, int64_t nr, int64_t k0, int64_t kc, uint16_t* out, int64_t ldo) {
        for (int64_t r = 0; r < nr; ++r) std::memcpy(out + r * ldo, base + (r0 + r) * ld + k0, kc * 2);
      };
    }
    const float* base = d.data_ptr<float>();
    const int64_t ld = d.size(1);
    return [base, ld](int64_t r0, int64_t nr, int64_t k0, int64_t kc, uint16_t* out, int64_t ldo) {
      for (int64_t r = 0; r < nr; ++r)
        for (int64_t k = 0; k < kc; ++k) out[r * ldo + k] = float_to_bf16_rne(base[(r0 + r) * ld + k0 + k]);
    };
  }
  return [&p](int64_t r0, int64_t nr, int64_t k0, int64_t kc, uint16_t* out, int64_t ldo) {
    for (int64_t r = 0; r < nr; ++r)
      for (int64_t k = 0; k < kc; ++k) out[r * ldo + k] = float_to_bf16_exact(value_at(p, r0 + r, k0 + k));
  };
}

// FP32 rows [r0, r0 + nr) of an operand, dequantized except for alpha.
torch::Tensor f32_panel(const DecodePlan& p, int64_t r0, int64_t nr) {
  const GemmOperand& op = *p.op;
  if (!op.copy) return op.dense.narrow(0, r0, nr).to(torch::kFloat32);
  const int64_t K = op.k();
  torch::Tensor out = torch::empty({nr, K}, torch::TensorOptions().dtype(torch::kFloat32));
  float* o = out.data_ptr<float>();
  for (int64_t r = 0; r < nr; ++r)
    for (int64_t k = 0; k < K; ++k) o[r * K + k] = value_at(p, r0 + r, k);
  return out;
}

void check_dense(const torch::Tensor& t, const std::string& what) {
  if (!t.defined() || t.dim() != 2)
    throw InvalidArgument(what + " must be a 2-D (rows, K) tensor");
  if (t.scalar_type() != torch::kFloat32 && t.scalar_type() != torch::kBFloat16)
    throw InvalidArgument(what + " dtype " + std::string(c10::toString(t.scalar_type())) +
                          " is not supported; pass float32 or bfloat16");
  if (!t.device().is_cpu()) throw InvalidArgument(what + " must be a CPU tensor on this path");
}

}  // namespace

GemmOperand GemmOperand::quantized(const QuantizedCopyTensor& copy, const precision::QuantizeOptions& options) {
  GemmOperand op;
  op.copy = &copy;
  op.options = options;
  return op;
}

GemmOperand GemmOperand::high_precision(const torch::Tensor& x) {
  GemmOperand op;
  op.dense = x.contiguous();
  return op;
}

int64_t GemmOperand::rows() const { return copy ? copy->rows : dense.size(0); }
int64_t GemmOperand::k() const { return copy ? copy->cols : dense.size(1); }

std::string GemmOperand::describe() const {
  if (copy)
    return precision::scheme_name(options.scheme) + "/" + precision::format_name(options.element) + " (" +
           std::to_string(copy->rows) + ", " + std::to_string(copy->cols) + ")";
  return std::string(c10::toString(dense.scalar_type())) + " (" + std::to_string(dense.size(0)) + ", " +
         std::to_string(dense.size(1)) + ")";
}

torch::Tensor gemm(const GemmOperand& a, const GemmOperand& b, const GemmOptions& options) {
  const std::string who = options.name + ": ";
  if (!a.copy) check_dense(a.dense, who + "operand A");
  if (!b.copy) check_dense(b.dense, who + "operand B");
  if (a.k() != b.k())
    throw InvalidArgument(who + "inner dimensions differ: A is " + a.describe() + ", B is " + b.describe() +
                          " (C = A·Bᵀ needs the same K)");
  if (options.out_dtype != torch::kFloat32 && options.out_dtype != torch::kBFloat16)
    throw InvalidArgument(who + "output dtype must be float32 or bfloat16");
  const int64_t M = a.rows(), N = b.rows(), K = a.k();
  if (options.bias && (options.bias->dim() != 1 || options.bias->size(0) != N))
    throw InvalidArgument(who + "bias must have shape (" + std::to_string(N) + "), got " + c10::str(options.bias->sizes()));
  if (options.accumulate) {
    const torch::Tensor& acc = *options.accumulate;
    if (acc.scalar_type() != torch::kFloat32 || acc.dim() != 2 || acc.size(0) != M || acc.size(1) != N ||
        !acc.is_contiguous())
      throw InvalidArgument(who + "accumulate must be a contiguous float32 (" + std::to_string(M) + ", " +
                            std::to_string(N) + ") tensor, got " + c10::str(acc.sizes()));
  }
  const DecodePlan pa = plan_for(a), pb = plan_for(b);
  torch::Tensor raw = torch::empty({M, N}, torch::TensorOptions().dtype(torch::kFloat32));
  if (pa.exact_bf16 && pb.exact_bf16) {
    cpu::gemm_bf16_tn(M, N, K, bf16_source(pa), bf16_source(pb), raw.data_ptr<float>(), N);
  } else {
    // FP32 path over panels of A: never a full FP32 copy of A; B's FP32 panel is reused for every A panel.
    constexpr int64_t kPanel = 256;
    for (int64_t n0 = 0; n0 < N; n0 += kPanel) {
      const torch::Tensor bp = f32_panel(pb, n0, std::min(kPanel, N - n0));
      for (int64_t m0 = 0; m0 < M; m0 += kPanel) {
        const torch::Tensor ap = f32_panel(pa, m0, std::min(kPanel, M - m0));
        raw.narrow(0, m0, ap.size(0)).narrow(1, n0, bp.size(0)).copy_(torch::mm(ap, bp.t()));
      }
    }
  }
  const float alpha = static_cast<float>(pa.alpha * pb.alpha);
  if (alpha != 1.0f) raw.mul_(alpha);
  if (options.bias) raw.add_(options.bias->to(torch::kFloat32));
  if (options.accumulate) {
    options.accumulate->add_(raw);
    return *options.accumulate;
  }
  return options.out_dtype == torch::kFloat32 ? raw : raw.to(options.out_dtype);
}

}  // namespace nibble::nn
