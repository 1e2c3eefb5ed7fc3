#include "core/quantization_stats.h"

#include <algorithm>
#include <cmath>

#include <ATen/Parallel.h>

#include "precision/copy_decoder.h"
#include "precision/error.h"
#include "precision/hadamard.h"

namespace nibble::core {
namespace {

// t @ blockdiag(m, m, ...): the transform `m` (n x n) applied to every group of n along the rows, in float64 as one
// matrix product. The quantizers' own transforms (precision/hadamard.h) are these matrices applied element by element.
torch::Tensor transform_rows(const torch::Tensor& t, const torch::Tensor& m, const std::string& what) {
  const int64_t n = m.size(0);
  if (t.size(1) % n != 0)
    throw Error("quantization statistics of " + what + ": the copy has " + std::to_string(t.size(1)) +
                " columns, not a multiple of its transform's " + std::to_string(n));
  return t.reshape({t.size(0), t.size(1) / n, n}).matmul(m.to(t.device())).reshape(t.sizes());
}

// NVFP4's RHT: y = g @ (diag(sign) H16 / 4) (precision::rht16).
torch::Tensor rht16_matrix(uint64_t seed) {
  const uint32_t mask = precision::rht_sign_mask(seed);
  auto m = torch::empty({16, 16}, torch::kFloat64);
  auto a = m.accessor<double, 2>();
  for (uint32_t i = 0; i < 16; ++i)
    for (uint32_t j = 0; j < 16; ++j)
      a[i][j] = 0.25 * precision::hadamard_sign(i, j) * (((mask >> i) & 1u) ? -1.0 : 1.0);
  return m;
}

// QuEST's transform: h = H32 g / sqrt(32) (precision::hadamard32_normalised; H32 is symmetric).
torch::Tensor hadamard32_matrix() {
  auto m = torch::empty({32, 32}, torch::kFloat64);
  auto a = m.accessor<double, 2>();
  for (uint32_t i = 0; i < 32; ++i)
    for (uint32_t j = 0; j < 32; ++j) a[i][j] = precision::hadamard_sign(i, j) / std::sqrt(32.0);
  return m;
}

// The data byte whose every element holds the format's largest finite magnitude (two per byte at <= 4 bits).
uint8_t all_max_byte(const precision::Format& f) {
  const auto code = static_cast<uint8_t>(f.max_finite_code());
  return f.bits() <= 4 ? static_cast<uint8_t>(code | (code << 4)) : code;
}

}  // namespace

void QuantizationErrorSums::add(const QuantizationErrorSums& o) {
  elements += o.elements;
  nonzero += o.nonzero;
  flushed += o.flushed;
  clamped += o.clamped;
  signal += o.signal;
  noise += o.noise;
  error += o.error;
  magnitude += o.magnitude;
  amax = std::max(amax, o.amax);
  log2_scale_max = std::max(log2_scale_max, o.log2_scale_max);
  neg_log2_scale_min = std::max(neg_log2_scale_min, o.neg_log2_scale_min);
  stochastic = stochastic || o.stochastic;
  scales_known = scales_known || o.scales_known;
}

void QuantizationErrorSums::store(double* sums, double* maxes) const {
  const double s[kSumFields] = {elements, nonzero, flushed, clamped, signal, noise, error, magnitude};
  const double m[kMaxFields] = {amax, log2_scale_max, neg_log2_scale_min, stochastic ? 1.0 : 0.0,
                                scales_known ? 1.0 : 0.0};
  std::copy(s, s + kSumFields, sums);
  std::copy(m, m + kMaxFields, maxes);
}

QuantizationErrorSums QuantizationErrorSums::load(const double* s, const double* m) {
  QuantizationErrorSums r;
  r.elements = s[0], r.nonzero = s[1], r.flushed = s[2], r.clamped = s[3];
  r.signal = s[4], r.noise = s[5], r.error = s[6], r.magnitude = s[7];
  r.amax = m[0], r.log2_scale_max = m[1], r.neg_log2_scale_min = m[2], r.stochastic = m[3] > 0.0;
  r.scales_known = m[4] > 0.0;
  return r;
}

namespace {

std::string copy_name(const precision::QuantizeOptions& options, bool columnwise) {
  return precision::scheme_name(options.scheme) + (columnwise ? " columnwise" : " rowwise") + " copy";
}

// The tensor the copy encodes, in the copy's orientation, in `dtype`: the source (transposed for a columnwise
// copy), through the same transform when the quantizer applied one -- NVFP4's RHT'd columnwise copy, and QuEST,
// which applies its Hadamard-32 inside the quantizer in either orientation (transforms in float64).
torch::Tensor encoded_tensor(const torch::Tensor& source, const precision::QuantizeOptions& options, bool columnwise,
                             torch::ScalarType dtype) {
  const std::string what = copy_name(options, columnwise);
  if (source.dim() != 2) throw Error("quantization statistics of a " + what + ": the source must be 2-D");
  torch::Tensor ref = source.detach();
  if (columnwise) ref = ref.t();
  const bool rht = columnwise && options.rht, quest = options.scheme == precision::Scheme::kMXFP4Quest;
  if (!rht && !quest) return ref.to(dtype).contiguous();
  ref = ref.to(torch::kFloat64).contiguous();
  if (rht) ref = transform_rows(ref, rht16_matrix(options.rht_seed), what);
  if (quest) ref = transform_rows(ref, hadamard32_matrix(), what);
  return ref.to(dtype).contiguous();
}

void check_shapes(const torch::Tensor& ref, const QuantizedCopyTensor& copy, const std::string& what) {
  if (ref.size(0) != copy.rows || ref.size(1) != copy.cols)
    throw Error("quantization statistics of a " + what + ": the copy is " + std::to_string(copy.rows) + " x " +
                std::to_string(copy.cols) + ", its source " + std::to_string(ref.size(0)) + " x " +
                std::to_string(ref.size(1)));
}

// One pass over a host copy and its float32 source: every figure from the code, the block scale and the
// per-tensor factor of each element (precision/copy_decoder.h), accumulated in float64 per chunk of rows and
// added in chunk order, so the sums do not depend on the thread count.
QuantizationErrorSums measure_on_host(const torch::Tensor& ref, const QuantizedCopyTensor& copy,
                                      const precision::QuantizeOptions& o) {
  const precision::QuantizedCopy view = copy.view();
  const precision::CopyLayout L = precision::copy_layout(o, copy.rows, copy.cols);
  const precision::CopyDecoder decoder(view, L, o);
  float decoded[256] = {};
  const uint32_t codes = 1u << std::min(8, o.element.bits());
  for (uint32_t code = 0; code < codes; ++code) decoded[code] = precision::decode_scalar(code, o.element);
  const double max_finite = precision::max_finite(o.element);
  const float factor = decoder.tensor_factor();
  const float* x = ref.data_ptr<float>();
  const int64_t rows = copy.rows, cols = copy.cols, chunk = 16;
  const int64_t chunks = (rows + chunk - 1) / chunk;
  struct Partial {
    QuantizationErrorSums s;
    double scale_min = std::numeric_limits<double>::infinity(), scale_max = 0.0;
  };
  std::vector<Partial> partials(static_cast<size_t>(chunks));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      Partial& p = partials[static_cast<size_t>(k)];
      for (int64_t r = k * chunk; r < std::min(rows, (k + 1) * chunk); ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const float block = decoder.block_scale(r, c);
          const double xv = x[r * cols + c], magnitude = std::abs(xv);
          const double q = decoded[decoder.code(r, c)] * block * factor;  // precision::dequantize's value
          const double scale = static_cast<double>(block) * factor, err = q - xv;
          p.s.signal += xv * xv;
          p.s.noise += err * err;
          p.s.error += err;
          p.s.magnitude += magnitude;
          p.s.amax = std::max(p.s.amax, magnitude);
          // The relative margin: see measure_copy_reference.
          if (magnitude > max_finite * scale * (1.0 + 1e-6)) p.s.clamped += 1;
          if (magnitude > 0) {
            p.s.nonzero += 1;
            if (q == 0) p.s.flushed += 1;
            if (scale > 0) p.scale_min = std::min(p.scale_min, scale), p.scale_max = std::max(p.scale_max, scale);
          }
        }
      }
    }
  });
  QuantizationErrorSums s;
  s.stochastic = o.rounding == precision::Rounding::kStochastic;
  s.scales_known = true;
  s.elements = static_cast<double>(rows * cols);
  double scale_min = std::numeric_limits<double>::infinity(), scale_max = 0.0;
  for (const Partial& p : partials) {
    s.nonzero += p.s.nonzero, s.flushed += p.s.flushed, s.clamped += p.s.clamped;
    s.signal += p.s.signal, s.noise += p.s.noise, s.error += p.s.error, s.magnitude += p.s.magnitude;
    s.amax = std::max(s.amax, p.s.amax);
    scale_min = std::min(scale_min, p.scale_min), scale_max = std::max(scale_max, p.scale_max);
  }
  if (scale_max > 0) s.log2_scale_max = std::log2(scale_max), s.neg_log2_scale_min = -std::log2(scale_min);
  return s;
}

}  // namespace

QuantizationErrorSums measure_copy(const torch::Tensor& source, const QuantizedCopyTensor& copy,
                                   const precision::QuantizeOptions& options, bool columnwise) {
  if (copy.device().is_cpu()) {
    torch::NoGradGuard no_grad;
    const torch::Tensor ref = encoded_tensor(source, options, columnwise, torch::kFloat32);
    check_shapes(ref, copy, copy_name(options, columnwise));
    return measure_on_host(ref, copy, options);
  }
  return measure_copy_reference(source, copy, options, columnwise);
}

QuantizationErrorSums measure_copy_reference(const torch::Tensor& source, const QuantizedCopyTensor& copy,
                                             const precision::QuantizeOptions& options, bool columnwise) {
  torch::NoGradGuard no_grad;
  const torch::Tensor ref = encoded_tensor(source, options, columnwise, torch::kFloat64);
  check_shapes(ref, copy, copy_name(options, columnwise));
  const torch::Tensor q = dequantize(copy, options).to(torch::kFloat64);
  QuantizationErrorSums s;
  s.stochastic = options.rounding == precision::Rounding::kStochastic;
  s.scales_known = true;
  s.elements = static_cast<double>(ref.numel());
  if (ref.numel() == 0) return s;
  // Every element's reach: the copy with every code at the format's largest magnitude, decoded with the copy's
  // own scales. A value beyond its reach was clamped; reach / max_finite is the decode scale of its block (with
  // any per-tensor factor), whatever the scheme's scale layout.
  QuantizedCopyTensor all_max = copy;
  all_max.data = torch::full_like(copy.data, all_max_byte(options.element));
  const torch::Tensor reach = dequantize(all_max, options).to(torch::kFloat64);
  const torch::Tensor magnitude = ref.abs(), err = q - ref;
  const torch::Tensor nonzero = magnitude > 0;
  // The relative margin keeps an element that the float32 encode put exactly at the largest magnitude from
  // counting as clamped when the decoded reach rounds a hair below it.
  const torch::Tensor clamped = magnitude > reach * (1.0 + 1e-6);
  const torch::Tensor scaled = nonzero & (reach > 0);
  const torch::Tensor log2_scale =
      torch::log2(reach / static_cast<double>(precision::max_finite(options.element)));
  const double inf = std::numeric_limits<double>::infinity();
  const torch::Tensor figures =
      torch::stack({nonzero.sum().to(torch::kFloat64), (nonzero & (q == 0)).sum().to(torch::kFloat64),
                    clamped.sum().to(torch::kFloat64), (ref * ref).sum(), (err * err).sum(), err.sum(),
                    magnitude.sum(), magnitude.max(), torch::where(scaled, log2_scale, -inf).max(),
                    torch::where(scaled, -log2_scale, -inf).max()})
          .cpu();
  const double* f = figures.data_ptr<double>();
  s.nonzero = f[0], s.flushed = f[1], s.clamped = f[2], s.signal = f[3], s.noise = f[4], s.error = f[5];
  s.magnitude = f[6], s.amax = f[7], s.log2_scale_max = f[8], s.neg_log2_scale_min = f[9];
  return s;
}

QuantizationErrorSums measure_values(const float* x, const float* q, int64_t n, bool stochastic) {
  QuantizationErrorSums s;
  s.stochastic = stochastic;
  s.elements = static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) {
    const double xv = x[i], err = static_cast<double>(q[i]) - xv, magnitude = std::abs(xv);
    s.signal += xv * xv;
    s.noise += err * err;
    s.error += err;
    s.magnitude += magnitude;
    s.amax = std::max(s.amax, magnitude);
    if (magnitude > 0) {
      s.nonzero += 1;
      if (q[i] == 0) s.flushed += 1;
    }
  }
  return s;
}

nlohmann::ordered_json stats_json(const QuantizationErrorSums& s) {
  if (s.elements == 0) return nullptr;
  nlohmann::ordered_json j;
  j["amax"] = s.amax;
  if (s.scales_known) {
    if (std::isfinite(s.log2_scale_max) && std::isfinite(s.neg_log2_scale_min))
      j["scale_log2"] = {-s.neg_log2_scale_min, s.log2_scale_max};
    else
      j["scale_log2"] = nullptr;  // no block holds a non-zero element
  }
  j["flushed"] = s.nonzero > 0 ? s.flushed / s.nonzero : 0.0;
  if (s.scales_known) j["clamped"] = s.clamped / s.elements;
  j["snr_db"] = s.noise > 0 ? nlohmann::ordered_json(10.0 * std::log10(s.signal / s.noise))
                            : nlohmann::ordered_json(nullptr);  // exact
  if (s.stochastic) j["bias"] = s.magnitude > 0 ? s.error / s.magnitude : 0.0;
  return j;
}

}  // namespace nibble::core
