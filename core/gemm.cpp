// The CPU GEMM path. Each operand is decoded, tile by tile, into BF16 values that are *exact*: the element
// times its block scale, with the scale's power of two (or NVFP4's E4M3 block scale, whose product with an
// E2M1 value has at most 6 significant bits) folded in, and every tensor-wide factor (FP8 per-tensor
// scale_inv, NVFP4's global decode scale, a common power of two) pulled out into one FP32 `alpha` applied
// after accumulation. BF16 x BF16 products are exact in FP32, so the result equals an FP32-accumulated GEMM
// of the dequantized operands. Scales that cannot be folded exactly (FP32 block scales that are not powers
// of two) take a slower FP32 path over row panels.
#include "core/gemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "core/cpu/decode_bf16.h"
#include "core/cpu/f32_to_bf16.h"
#include "core/cpu/gemm_bf16.h"
#include "core/cuda_dispatch.h"
#include "precision/error.h"
#include "precision/format_names.h"
#include "precision/scaling.h"
#include "precision/scheme_facts.h"

namespace nibble::core {
namespace {

using precision::Scheme;

uint16_t float_to_bf16_exact(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>(u >> 16);  // callers guarantee the low 16 bits are zero
}

// How one operand decodes: code -> element value (LUT), times fold(row, k / block), times alpha overall.
// The fold of (row, block) is fold_lut[scale code] for one-byte scale codes (UE4M3, E8M0), else an FP32
// table fold[(row / fold_row_div) * fold_cols + block]; block == 0 means no fold (per-tensor scaling).
struct DecodePlan {
  const GemmOperand* op = nullptr;
  float lut[256] = {};
  cpu::CodeTables tables;    // lut for the vector decode (cpu/decode_bf16.h), when lut_bf16
  bool lut_bf16 = true;      // every lut entry is a BF16 value (true for every format of <= 8 bits)
  const uint8_t* data = nullptr;
  int64_t data_ld = 0;
  int block = 0;             // block length along K (0 = one scale for the tensor)
  int64_t fold_cols = 0;
  const uint8_t* scale_codes = nullptr;  // one-byte scale codes (rows x scale_ld), or null: FP32 `fold`
  int64_t scale_ld = 0;
  float fold_lut[256] = {};
  std::vector<float> fold;   // FP32 scales: ceil(rows / fold_row_div) x fold_cols
  int64_t fold_row_div = 1;
  double alpha = 1.0;
  bool exact_bf16 = true;    // value * fold is exactly representable (and normal) in BF16
  bool fp4 = false;
};

// The value of a one-byte scale code: UE4M3 for NVFP4, E8M0 for the MX schemes.
float decode_scale_code(Scheme s, uint32_t code) {
  return precision::scheme_facts(s).scale == precision::ScaleStorage::kUE4M3
             ? precision::decode_scalar(code, precision::formats::kE4M3)
             : precision::e8m0_decode_multiplier(code);
}

// Block scales stored as FP32 (the FP8 block schemes).
bool float_scales(Scheme s) {
  const precision::SchemeFacts f = precision::scheme_facts(s);
  return f.scale == precision::ScaleStorage::kFloat32 && f.block_cols > 0;
}

DecodePlan plan_for(const GemmOperand& op) {
  DecodePlan p;
  p.op = &op;
  if (!op.copy) return p;
  const QuantizedCopyTensor& c = *op.copy;
  const precision::QuantizeOptions& o = op.options;
  p.fp4 = o.element.bits() <= 4;
  p.data = c.data.data_ptr<uint8_t>();
  p.data_ld = c.data.size(1);
  for (uint32_t code = 0; code < (p.fp4 ? 16u : 256u); ++code) {
    p.lut[code] = precision::decode_scalar(code, o.element);
    uint32_t u;
    std::memcpy(&u, &p.lut[code], 4);
    if ((u & 0xFFFFu) != 0) p.lut_bf16 = false;
  }
  if (p.lut_bf16) p.tables.fill(p.lut, p.fp4 ? 16 : 256);
  p.block = precision::scheme_facts(o.scheme).block_cols;
  if (o.scheme == Scheme::kFP8Tensor) {
    p.alpha = c.scale.data_ptr<float>()[0];
    return p;
  }
  p.fold_cols = (c.cols + p.block - 1) / p.block;
  const bool nvfp4 = precision::scheme_facts(o.scheme).scale == precision::ScaleStorage::kUE4M3;
  // Every distinct scale value s the operand uses goes through the same checks: the largest power of two
  // (ref_exp) and whether all are powers of two (NVFP4's E4M3 scales need not be).
  int ref_exp = -1000;
  auto visit = [&](float s) {
    if (s > 0) ref_exp = std::max(ref_exp, std::ilogb(s));
    if (!nvfp4 && s > 0 && std::ldexp(1.0f, std::ilogb(s)) != s) p.exact_bf16 = false;  // not a power of two
  };
  bool present[256] = {};
  if (float_scales(o.scheme)) {
    p.fold_row_div = precision::scheme_facts(o.scheme).scale_row_div;
    const int64_t fold_rows = (c.rows + p.fold_row_div - 1) / p.fold_row_div;
    const float* s = c.scale.data_ptr<float>();
    const int64_t ld = c.scale.size(1);
    p.fold.resize(static_cast<size_t>(fold_rows * p.fold_cols));
    for (int64_t q = 0; q < fold_rows; ++q)
      for (int64_t kb = 0; kb < p.fold_cols; ++kb) visit(p.fold[q * p.fold_cols + kb] = s[q * ld + kb]);
  } else {
    p.scale_codes = c.scale.data_ptr<uint8_t>();
    p.scale_ld = c.scale.size(1);
    for (uint32_t code = 0; code < 256; ++code) p.fold_lut[code] = decode_scale_code(o.scheme, code);
    if (!nvfp4) {  // (NVFP4 uses neither check)
      for (int64_t r = 0; r < c.rows; ++r) {
        const uint8_t* row = p.scale_codes + r * p.scale_ld;
        for (int64_t kb = 0; kb < p.fold_cols; ++kb) present[row[kb]] = true;
      }
      for (uint32_t code = 0; code < 256; ++code)
        if (present[code]) visit(p.fold_lut[code]);
    }
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
  auto rescale = [&](float& f, bool used) {
    f = std::ldexp(f, -ref_exp);
    if (used && f > 0 && f * min_element < 1.1754944e-38f) p.exact_bf16 = false;
  };
  for (float& f : p.fold) rescale(f, true);
  for (uint32_t code = 0; code < 256; ++code)
    if (p.scale_codes) rescale(p.fold_lut[code], present[code]);
  return p;
}

float fold_at(const DecodePlan& p, int64_t r, int64_t kb) {
  if (p.scale_codes) return p.fold_lut[p.scale_codes[r * p.scale_ld + kb]];
  return p.fold[(r / p.fold_row_div) * p.fold_cols + kb];
}

uint32_t code_at(const DecodePlan& p, int64_t r, int64_t k) {
  const uint8_t* row = p.data + r * p.data_ld;
  return p.fp4 ? (row[k / 2] >> ((k % 2) * 4)) & 0xFu : row[k];
}

// Element (r, k) of the operand, dequantized except for alpha, in FP32.
float value_at(const DecodePlan& p, int64_t r, int64_t k) {
  const float v = p.lut[code_at(p, r, k)];
  return p.block == 0 ? v : v * fold_at(p, r, k / p.block);
}

// The folds of `groups` consecutive 16-element groups of row r from column k (a multiple of 16; the plan's block a
// multiple of 16): fold_at's values with its two integer divisions (by the block, by the 2-D block's rows) done
// once per call instead of per group -- a 64-bit division costs more than decoding the group's 16 codes.
void row_folds(const DecodePlan& p, int64_t r, int64_t k, int64_t groups, float* folds) {
  const int64_t per_block = p.block / 16;
  int64_t kb = k / p.block, group_in_block = (k % p.block) / 16;
  const uint8_t* codes = p.scale_codes ? p.scale_codes + r * p.scale_ld : nullptr;
  const float* row = p.scale_codes ? nullptr : p.fold.data() + (r / p.fold_row_div) * p.fold_cols;
  for (int64_t g = 0; g < groups; ++g) {
    folds[g] = codes ? p.fold_lut[codes[kb]] : row[kb];
    if (++group_in_block == per_block) group_in_block = 0, ++kb;
  }
}

// Row r, columns [k0, k0 + kc), as BF16: bits of value_at(p, r, k), which the plan made exact.
void decode_row(const DecodePlan& p, int64_t r, int64_t k0, int64_t kc, uint16_t* out) {
  const int64_t end = k0 + kc;
  int64_t k = k0;
  const bool folded = p.block != 0;
  if (p.lut_bf16 && (!folded || p.block % 16 == 0)) {
    // Scalar up to the first multiple of 32 (whole blocks and whole bytes from there), then vector runs of
    // whole 32s (cpu/decode_bf16.h: AVX-512 VBMI or Highway lanes), each with its blocks' folds.
    for (; k < end && k % 32 != 0; ++k) out[k - k0] = float_to_bf16_exact(value_at(p, r, k));
    const uint8_t* row = p.data + r * p.data_ld;
    constexpr int64_t kRun = 1024;
    float folds[kRun / 16];
    while (end - k >= 32) {
      const int64_t n = std::min(kRun, (end - k) / 32 * 32);
      if (folded) row_folds(p, r, k, n / 16, folds);
      cpu::decode_bf16({&p.tables, p.fp4, p.fp4 ? row + k / 2 : row + k, n, folded ? folds : nullptr}, out + (k - k0));
      k += n;
    }
  }
  for (; k < end; ++k) out[k - k0] = float_to_bf16_exact(value_at(p, r, k));
}

using cpu::f32_to_bf16_row;  // FP32 -> BF16, RNE with satfinite (core/cpu/f32_to_bf16.h)

// Rows are decoded one after the other, each a short run of a long row (one K block): too short for the
// hardware prefetcher to pick up, so the row kPrefetchRows ahead is requested explicitly.
constexpr int64_t kPrefetchRows = 2;

void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i);
  if (bytes > 0) __builtin_prefetch(c + bytes - 1);
}

// A column-major dense operand (the transpose of a contiguous tensor: the backward's dyᵀ, xᵀ and Wᵀ): row r,
// column k at base[k * ld + r]. A tile is read kKStep columns at a time along r, where memory is contiguous,
// rounded to BF16 by the same rule as the row-major path, and stored transposed into the panel: the operand is
// never copied whole (a torch transpose copy of a 2048 x 1376 FP32 activation costs ~4 ms here).
template <typename T>
cpu::RowSource column_major_source(const T* base, int64_t ld) {
  return [base, ld](int64_t r0, int64_t nr, int64_t k0, int64_t kc, uint16_t* out, int64_t ldo) {
    constexpr int64_t kRStep = 64, kKStep = 8;
    uint16_t tile[kKStep][kRStep];
    for (int64_t rb = 0; rb < nr; rb += kRStep) {
      const int64_t rn = std::min(kRStep, nr - rb);
      for (int64_t kb = 0; kb < kc; kb += kKStep) {
        const int64_t kn = std::min(kKStep, kc - kb);
        for (int64_t j = 0; j < kn; ++j) {
          const T* column = base + (k0 + kb + j) * ld + r0 + rb;
          if constexpr (std::is_same_v<T, float>) {
            f32_to_bf16_row(column, rn, tile[j]);
          } else {
            std::memcpy(tile[j], column, static_cast<size_t>(rn) * 2);
          }
        }
        for (int64_t r = 0; r < rn; ++r)
          for (int64_t j = 0; j < kn; ++j) out[(rb + r) * ldo + kb + j] = tile[j][r];
      }
    }
  };
}

cpu::RowSource bf16_source(const DecodePlan& p) {
  const GemmOperand& op = *p.op;
  if (!op.copy) {
    const torch::Tensor& d = op.dense;
    if (d.stride(0) == 1 && d.stride(1) != 1) {
      if (d.scalar_type() == torch::kBFloat16)
        return column_major_source(reinterpret_cast<const uint16_t*>(d.data_ptr()), d.stride(1));
      return column_major_source(d.data_ptr<float>(), d.stride(1));
    }
    if (d.scalar_type() == torch::kBFloat16) {
      const auto* base = reinterpret_cast<const uint16_t*>(d.data_ptr());
      const int64_t ld = d.size(1);
      return [base, ld](int64_t r0, int64_t nr, int64_t k0, int64_t kc, uint16_t* out, int64_t ldo) {
        for (int64_t r = 0; r < nr; ++r) {
          if (r + kPrefetchRows < nr) prefetch_bytes(base + (r0 + r + kPrefetchRows) * ld + k0, kc * 2);
          std::memcpy(out + r * ldo, base + (r0 + r) * ld + k0, kc * 2);
        }
      };
    }
    const float* base = d.data_ptr<float>();
    const int64_t ld = d.size(1);
    return [base, ld](int64_t r0, int64_t nr, int64_t k0, int64_t kc, uint16_t* out, int64_t ldo) {
      for (int64_t r = 0; r < nr; ++r) {
        if (r + kPrefetchRows < nr) prefetch_bytes(base + (r0 + r + kPrefetchRows) * ld + k0, kc * 4);
        f32_to_bf16_row(base + (r0 + r) * ld + k0, kc, out + r * ldo);
      }
    };
  }
  return [&p](int64_t r0, int64_t nr, int64_t k0, int64_t kc, uint16_t* out, int64_t ldo) {
    const int64_t b0 = p.fp4 ? k0 / 2 : k0, bytes = (p.fp4 ? (k0 + kc + 1) / 2 : k0 + kc) - b0;
    for (int64_t r = 0; r < nr; ++r) {
      if (r + kPrefetchRows < nr) prefetch_bytes(p.data + (r0 + r + kPrefetchRows) * p.data_ld + b0, bytes);
      decode_row(p, r0 + r, k0, kc, out + r * ldo);
    }
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

// A large fresh output is first touched by the GEMM, 4 KiB page fault by page fault (for a 4096 x 4096
// FP32 result that is ~10% of the GEMM's time): ask for transparent huge pages, as torch's own allocator
// does under THP_MEM_ALLOC_ENABLE. Only from 32 MiB, where glibc always maps fresh memory (smaller blocks
// are recycled from the heap already faulted in, and measured slower with huge pages). Advisory only.
void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (bytes < (size_t{32} << 20)) return;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

void check_dense(const torch::Tensor& t, const std::string& what) {
  if (!t.defined() || t.dim() != 2)
    throw InvalidArgument(what + " must be a 2-D (rows, K) tensor");
  if (t.scalar_type() != torch::kFloat32 && t.scalar_type() != torch::kBFloat16)
    throw InvalidArgument(what + " dtype " + std::string(c10::toString(t.scalar_type())) +
                          " is not supported; pass float32 or bfloat16");
}

torch::Device operand_device(const GemmOperand& op) {
  return op.copy ? op.copy->data.device() : op.dense.device();
}

// FP64 rows [r0, r0 + nr) of an operand, dequantized except for alpha; dense operands rounded to BF16 first
// when the FP32 path would have fed the BF16 kernel (`bf16_operands`), so FP64 accumulation changes only how
// the products are summed, never the operands.
torch::Tensor f64_panel(const DecodePlan& p, int64_t r0, int64_t nr, bool bf16_operands) {
  const GemmOperand& op = *p.op;
  if (!op.copy && bf16_operands) return op.dense.narrow(0, r0, nr).to(torch::kBFloat16).to(torch::kFloat64);
  return f32_panel(p, r0, nr).to(torch::kFloat64);
}

// The FP32 product (alpha applied) -> the caller's output: the bias and the accumulation added in FP32, then
// the output dtype. Both devices end here, so they add in the same order.
torch::Tensor finish_output(torch::Tensor raw, const GemmOptions& options) {
  if (options.bias) raw.add_(options.bias->to(torch::kFloat32));
  if (options.accumulate) {
    options.accumulate->add_(raw);
    return *options.accumulate;
  }
  return options.out_dtype == torch::kFloat32 ? raw : raw.to(options.out_dtype);
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
  // Row-major, or column-major as it comes (a contiguous tensor's .t(): the CPU GEMM transposes it tile by tile
  // while packing); anything else is copied to row-major.
  const bool column_major = x.dim() == 2 && x.stride(0) == 1 && x.stride(1) == x.size(0) && x.size(1) > 1;
  op.dense = column_major ? x : x.contiguous();
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
  if (operand_device(a) != operand_device(b))
    throw InvalidArgument(who + "operands are on different devices: A on " + operand_device(a).str() + ", B on " +
                          operand_device(b).str() + "; move both to one device");
  if (!a.copy) check_dense(a.dense, who + "operand A");
  if (!b.copy) check_dense(b.dense, who + "operand B");
  if (a.k() != b.k())
    throw InvalidArgument(who + "inner dimensions differ: A is " + a.describe() + ", B is " + b.describe() +
                          " (C = A·Bᵀ needs the same K)");
  if (options.out_dtype != torch::kFloat32 && options.out_dtype != torch::kBFloat16 &&
      !(options.out_dtype == torch::kFloat64 && options.fp64_accumulation))
    throw InvalidArgument(who + "output dtype must be float32 or bfloat16 (float64 only under fp64_accumulation), got " +
                          std::string(c10::toString(options.out_dtype)));
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
  const torch::Device device = operand_device(a);
#if NIBBLE_WITH_CUDA
  if (device.is_cuda()) return finish_output(gemm_on_cuda(a, b, options), options);
#endif
  if (!device.is_cpu())
    throw InvalidArgument(who + "operands are on " + device.str() +
                          (device.is_cuda() ? "; this build of nibble has no CUDA kernels (configure with NIBBLE_CUDA=ON)"
                                            : "; nibble's GEMM runs on CPU and CUDA tensors"));
  for (const auto& [t, what] : {std::pair{options.bias, "bias"}, std::pair{options.accumulate, "accumulate"}})
    if (t && !t->device().is_cpu())
      throw InvalidArgument(who + what + " is on " + t->device().str() + " but the operands are on the CPU");
  const DecodePlan pa = plan_for(a), pb = plan_for(b);
  if (options.fp64_accumulation) {
    constexpr int64_t kPanel = 256;
    torch::Tensor raw64 = torch::empty({M, N}, torch::TensorOptions().dtype(torch::kFloat64));
    const bool bf16_operands = pa.exact_bf16 && pb.exact_bf16;
    for (int64_t n0 = 0; n0 < N; n0 += kPanel) {
      const torch::Tensor bp = f64_panel(pb, n0, std::min(kPanel, N - n0), bf16_operands);
      for (int64_t m0 = 0; m0 < M; m0 += kPanel) {
        const torch::Tensor ap = f64_panel(pa, m0, std::min(kPanel, M - m0), bf16_operands);
        raw64.narrow(0, m0, ap.size(0)).narrow(1, n0, bp.size(0)).copy_(torch::mm(ap, bp.t()));
      }
    }
    raw64.mul_(pa.alpha * pb.alpha);
    if (options.bias) raw64.add_(options.bias->to(torch::kFloat64));
    if (options.accumulate) {
      options.accumulate->add_(raw64.to(torch::kFloat32));
      return *options.accumulate;
    }
    return options.out_dtype == torch::kFloat64 ? raw64 : raw64.to(torch::kFloat32).to(options.out_dtype);
  }
  torch::Tensor raw = torch::empty({M, N}, torch::TensorOptions().dtype(torch::kFloat32));
  advise_huge_pages(raw.data_ptr(), static_cast<size_t>(M * N) * sizeof(float));
  const float alpha = static_cast<float>(pa.alpha * pb.alpha);
  if (pa.exact_bf16 && pb.exact_bf16) {
    // alpha is applied inside, as the last K block is stored: the same FP32 product as raw.mul_(alpha).
    cpu::gemm_bf16_tn(M, N, K, bf16_source(pa), bf16_source(pb), raw.data_ptr<float>(), N, alpha);
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
    if (alpha != 1.0f) raw.mul_(alpha);
  }
  return finish_output(raw, options);
}

}  // namespace nibble::core
