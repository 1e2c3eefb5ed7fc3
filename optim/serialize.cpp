#include "optim/serialize.h"

#include <cstring>
#include <string>

#include "precision/error.h"

namespace nibble::optim {
namespace {

constexpr char kMagic[4] = {'N', 'B', 'O', 'S'};
constexpr uint32_t kVersion = 1;

struct Header {
  char magic[4];
  uint32_t version;
  uint8_t codec;  // as requested (the layout follows effective_codec)
  uint8_t moments;
  uint8_t has_master;
  uint8_t reserved[5];
  int64_t numel;
  int64_t step;
};
static_assert(sizeof(Header) == 32);

// The (pointer, bytes) pieces of a slot's state, in blob order.
template <class Fn>
void for_each_piece(const TensorSlot& slot, int moments, Fn fn) {
  const MomentLayout L = moment_layout(slot.codec, slot.numel);
  const MomentView* views[2] = {&slot.m, &slot.v};
  for (int k = 0; k < moments; ++k) {
    const MomentView& mv = *views[k];
    fn(mv.values, L.value_bytes);
    if (L.has_scale) fn(mv.scale, 4 * L.groups);
    if (L.has_expansion) fn(mv.expansion, 4 * L.groups);
    if (L.has_centre) fn(mv.centre, 4 * L.groups);
  }
  if (slot.master) fn(slot.master, 4 * slot.numel);
}

void check_moments(int moments) {
  if (moments < 0 || moments > 2)
    throw InvalidArgument("optimizer state: moments must be 0, 1 or 2, got " + std::to_string(moments));
}

}  // namespace

std::vector<uint8_t> serialize_tensor_state(const TensorSlot& slot, int moments) {
  check_moments(moments);
  if (!slot.step) throw InvalidArgument("serialize optimizer state: the slot has no step counter");
  Header h{};
  std::memcpy(h.magic, kMagic, 4);
  h.version = kVersion;
  h.codec = static_cast<uint8_t>(slot.codec);
  h.moments = static_cast<uint8_t>(moments);
  h.has_master = slot.master ? 1 : 0;
  h.numel = slot.numel;
  h.step = *slot.step;
  std::vector<uint8_t> out(sizeof h);
  std::memcpy(out.data(), &h, sizeof h);
  for_each_piece(slot, moments, [&](const void* p, int64_t bytes) {
    if (bytes > 0 && !p) throw InvalidArgument("serialize optimizer state: a state buffer is null");
    const size_t at = out.size();
    out.resize(at + static_cast<size_t>(bytes));
    if (bytes > 0) std::memcpy(out.data() + at, p, static_cast<size_t>(bytes));
  });
  return out;
}

void deserialize_tensor_state(const uint8_t* bytes, size_t size, const TensorSlot& slot, int moments) {
  check_moments(moments);
  Header h{};
  if (size < sizeof h)
    throw InvalidArgument("load optimizer state: " + std::to_string(size) + " bytes is shorter than the header");
  std::memcpy(&h, bytes, sizeof h);
  if (std::memcmp(h.magic, kMagic, 4) != 0)
    throw InvalidArgument("load optimizer state: not a nibble optimizer state (bad magic)");
  if (h.version != kVersion)
    throw InvalidArgument("load optimizer state: version " + std::to_string(h.version) + "; this build reads version " +
                          std::to_string(kVersion));
  auto mismatch = [](const std::string& what, const std::string& saved, const std::string& here) {
    throw InvalidArgument("load optimizer state: " + what + " is " + saved + " in the saved state but " + here +
                          " in the optimizer");
  };
  if (h.codec > static_cast<uint8_t>(StateCodec::kInt8))
    mismatch("the codec", "unknown (" + std::to_string(h.codec) + ")", state_codec_name(slot.codec));
  if (h.codec != static_cast<uint8_t>(slot.codec))
    mismatch("the codec", state_codec_name(static_cast<StateCodec>(h.codec)), state_codec_name(slot.codec));
  if (h.numel != slot.numel) mismatch("numel", std::to_string(h.numel), std::to_string(slot.numel));
  if (h.moments != moments) mismatch("the moment count", std::to_string(h.moments), std::to_string(moments));
  if ((h.has_master != 0) != (slot.master != nullptr))
    mismatch("the FP32 master", h.has_master ? "present" : "absent", slot.master ? "present" : "absent");
  if (h.step < 0) throw InvalidArgument("load optimizer state: negative step " + std::to_string(h.step));
  size_t expected = sizeof h;
  for_each_piece(slot, moments, [&](const void*, int64_t b) { expected += static_cast<size_t>(b); });
  if (size != expected)
    throw InvalidArgument("load optimizer state: " + std::to_string(size) + " bytes, expected " +
                          std::to_string(expected));
  if (!slot.step) throw InvalidArgument("load optimizer state: the slot has no step counter");
  size_t at = sizeof h;
  for_each_piece(slot, moments, [&](const void* p, int64_t b) {
    if (b > 0 && !p) throw InvalidArgument("load optimizer state: a receiving state buffer is null");
    if (b > 0) std::memcpy(const_cast<void*>(p), bytes + at, static_cast<size_t>(b));
    at += static_cast<size_t>(b);
  });
  *slot.step = h.step;
}

}  // namespace nibble::optim
