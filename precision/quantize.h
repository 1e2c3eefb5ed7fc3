#pragma once
// Block-scaled quantization: the quantized-tensor description and quantize/dequantize (docs/QUANTIZATION.md).
// Non-owning, like TE's Tensor: callers allocate the buffers from the layouts computed here, so the same
// code serves torch tensors, plain vectors and (later) device memory.
#include <cstddef>
#include <cstdint>
#include <string>

#include "precision/format.h"
#include "precision/host_device.h"

namespace nibble::precision {

enum class Scheme : uint8_t {
  kFP8Tensor,         // per-tensor current (or delayed) scaling, E4M3 or E5M2
  kFP8Block128,       // 1x128 blocks, FP32 scales
  kFP8Block16,        // 1x16 blocks, FP32 scales (COAT's compression of saved activations)
  kFP8Block128x128,   // 128x128 tiles, FP32 scales
  kMXFP8,             // 1x32 blocks, E8M0 scales
  kNVFP4,             // 1x16 blocks, UE4M3 scales + FP32 global
  kNVFP4_2D,          // 16x16 tiles, UE4M3 scales + FP32 global
  kMXFP4,             // 1x32 blocks, E8M0 scales (absmax, TE rule)
  kMXFP4Quest,        // Hadamard-32 + sigma scale + clip mask (Quartet forward)
};

enum class ScaleStorage : uint8_t { kFloat32, kE8M0, kUE4M3 };
enum class MxScaleRule : uint8_t { kCeil, kFloor };
enum class InputType : uint8_t { kFloat32, kBFloat16 };

// Parses "fp8_tensor", "fp8_tensor_e5m2", "fp8_block128", ...; sets *element to the scheme's default
// element format. Throws InvalidArgument listing the valid names.
Scheme parse_scheme(const std::string& name, Format* element);
std::string scheme_name(Scheme scheme);

// Where the input sits in the logical tensor whose element indices key the stochastic-rounding bits
// (precision/stochastic.h). Input element (r, c) of an (M, K) input draws the bits of index
// (row_offset + r) * full_cols + col_offset + c; the columnwise copy's element (c, r) those of
// (col_offset + c) * full_rows + row_offset + r. A tensor-parallel shard (a column slice of the output
// gradient) or a sequence-parallel slice (a row slice) given its place in the whole tensor thus rounds each
// element exactly as quantizing the whole tensor would. full_rows / full_cols = 0: the input's own M / K.
// Rows past full_rows (pad rows, dropped afterwards) draw some other element's bits: harmless.
struct SrIndexMap {
  int64_t full_rows = 0;
  int64_t full_cols = 0;
  int64_t row_offset = 0;
  int64_t col_offset = 0;
};

// The SR index of element (r, c) of one copy, in the copy's own (rows, cols) coordinates:
// (row_offset + r) * stride + col_offset + c.
struct SrCopyIndexing {
  uint64_t stride = 0;
  uint64_t row_offset = 0;
  uint64_t col_offset = 0;
  NIBBLE_HOST_DEVICE uint64_t index(int64_t r, int64_t c) const {
    return (row_offset + static_cast<uint64_t>(r)) * stride + col_offset + static_cast<uint64_t>(c);
  }
};

// The indexing of the rowwise (columnwise = false) or columnwise copy of an (M, K) input under `map`.
NIBBLE_HOST_DEVICE SrCopyIndexing sr_copy_indexing(const SrIndexMap& map, bool columnwise, int64_t M, int64_t K) {
  const uint64_t full_rows = static_cast<uint64_t>(map.full_rows ? map.full_rows : M);
  const uint64_t full_cols = static_cast<uint64_t>(map.full_cols ? map.full_cols : K);
  const uint64_t ro = static_cast<uint64_t>(map.row_offset), co = static_cast<uint64_t>(map.col_offset);
  return columnwise ? SrCopyIndexing{full_rows, co, ro} : SrCopyIndexing{full_cols, ro, co};
}

struct QuantizeOptions {
  Scheme scheme = Scheme::kFP8Tensor;
  Format element = formats::kE4M3;  // E4M3 or E5M2 for FP8 schemes; E2M1 for FP4 schemes
  bool rowwise = true;
  bool columnwise = false;
  Rounding rounding = Rounding::kNearestEven;
  uint64_t seed = 0;
  uint64_t offset = 0;
  SrIndexMap sr_index;        // stochastic rounding: this input's place in the tensor the bits are keyed by
  bool rht = false;           // NVFP4 columnwise copy only
  uint64_t rht_seed = 0;      // 0 = TE's fixed sign vector
  bool pow2_scale = false;    // FP8 per-tensor and block scales
  float amax_epsilon = 0.0f;  // FP8 per-tensor and block scales
  MxScaleRule mx_rule = MxScaleRule::kCeil;
  bool use_fixed_scale = false;  // delayed scaling: use fixed_scale instead of the current amax
  float fixed_scale = 1.0f;
  // A tensor-wide amax reduced elsewhere -- the max over a tensor-parallel group of every rank's own amax
  // (tensor_amax below) -- so a slice takes its per-tensor factor (fp8_tensor's scale, nvfp4's S_enc) from
  // the whole tensor and quantizes exactly as the whole tensor would. group_amax serves the rowwise copy and a
  // columnwise copy without RHT; group_rht_amax an RHT'd columnwise copy (the amax after the transform). < 0:
  // this input's own. Only schemes with a per-tensor factor take them; each must be >= this input's own.
  float group_amax = -1.0f;
  float group_rht_amax = -1.0f;
};

// Sensible defaults per scheme (block FP8 uses power-of-two scales, FP4 schemes use E2M1).
QuantizeOptions default_options(Scheme scheme);

// Shape of one copy: rowwise = (M, K), columnwise = (K, M), both stored row-major.
struct CopyLayout {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t data_row_bytes = 0;  // cols for 8-bit elements, ceil(cols/2) for FP4
  int64_t scale_rows = 0;
  int64_t scale_cols = 0;
  ScaleStorage scale_storage = ScaleStorage::kFloat32;
  bool has_mask = false;  // QuEST clip mask, one byte per element
};

CopyLayout copy_layout(const QuantizeOptions& options, int64_t rows, int64_t cols);

// One quantized copy: buffers sized by copy_layout (data rows*data_row_bytes, scales scale_rows*scale_cols
// of float or uint8, mask rows*cols bytes when has_mask).
struct QuantizedCopy {
  uint8_t* data = nullptr;
  void* scale = nullptr;
  float* global_amax = nullptr;
  uint8_t* mask = nullptr;
};

struct QuantizeInput {
  const void* data = nullptr;
  InputType type = InputType::kFloat32;
  int64_t rows = 0;  // M: the product of all leading dimensions
  int64_t cols = 0;  // K: the last dimension
  std::string name = "tensor";  // used in error messages
};

struct QuantizeStats {
  float amax = 0.0f;  // max|x| of the input (what delayed scaling records)
};

// The amaxes quantize() takes a per-tensor factor from, without quantizing: max|x| of the input and, with
// `rht`, of its columnwise copy after the 16-point RHT (rht_seed as in QuantizeOptions; the input's rows must
// be a multiple of 16). `nan`: the input (or its transform) holds a NaN; the amaxes then mean nothing.
struct TensorAmax {
  float amax = 0.0f;
  float rht_amax = 0.0f;
  bool nan = false;
};
TensorAmax tensor_amax(const QuantizeInput& input, bool rht, uint64_t rht_seed);

// The checks every quantizer (CPU and CUDA) runs before touching data: shapes and options, InvalidArgument
// with the reason. Reads no element of the input.
void validate_quantize(const QuantizeInput& input, const QuantizeOptions& options);

// The amaxes the copies take their per-tensor factor from, given this input's own (own_columnwise: the amax
// after the RHT for an RHT'd columnwise copy, else own): the group amaxes of QuantizeOptions where set, after
// checking that they cover this input (InvalidArgument naming the key otherwise).
struct CopyAmaxes {
  float rowwise = 0.0f;
  float columnwise = 0.0f;
};
CopyAmaxes copy_amaxes(const QuantizeInput& input, const QuantizeOptions& options, float own,
                       float own_columnwise);

// The errors every quantizer raises for a NaN: at input element (row, col) of an (rows, cols) input, and for
// a Hadamard group (`transform`: "16-point RHT", "Hadamard-32") that became NaN (Inf of both signs in a group).
std::string nan_input_message(const QuantizeInput& input, int64_t row, int64_t col);
std::string transform_nan_message(const QuantizeInput& input, const char* transform);

// Columnwise copies draw their stochastic-rounding bits at counter offset options.offset + this, independent
// of the rowwise copy's (2-D schemes excepted: their columnwise codes are the rowwise codes transposed).
inline constexpr uint64_t kColumnwiseSrOffset = uint64_t{1} << 63;
// The largest finite bfloat16 (0x7F7F): block FP8's fallback scale for a bfloat16 input when fmax / amax
// overflows (TE's value_for_inf is the input type's max).
inline constexpr float kBF16Max = 3.3895313892515355e38f;

// Validates shapes and options (InvalidArgument with the reason), then fills the requested copies.
QuantizeStats quantize(const QuantizeInput& input, const QuantizeOptions& options, const QuantizedCopy* rowwise,
                       const QuantizedCopy* columnwise);

// Decodes one copy (layout from copy_layout) to float32 (rows x cols). QuEST and RHT copies decode to
// the transformed domain the GEMM consumes.
void dequantize(const QuantizedCopy& copy, const CopyLayout& layout, const QuantizeOptions& options, float* out);

}  // namespace nibble::precision
