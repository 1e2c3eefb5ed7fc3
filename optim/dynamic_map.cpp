#include "optim/dynamic_map.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace nibble::optim {
namespace {

DynamicMap build(bool is_signed) {
  std::vector<double> values = {0.0, 1.0};
  for (int i = 0; i <= 6; ++i) {
    const int bins = is_signed ? (1 << i) : (1 << (i + 1));
    const double decade = std::pow(10.0, i - 6);
    const double width = 0.9 / bins;
    for (int b = 0; b < bins; ++b) {
      const double midpoint = 0.1 + (b + 0.5) * width;
      values.push_back(decade * midpoint);
      if (is_signed) values.push_back(-decade * midpoint);
    }
  }
  // Signed: 2 + 2 * 127 = 256; unsigned: 2 + 254 = 256.
  std::sort(values.begin(), values.end());
  DynamicMap map{};
  for (int j = 0; j < 256; ++j) map.value[j] = static_cast<float>(values[j]);
  for (int j = 0; j < 255; ++j) map.threshold[j] = 0.5f * (map.value[j] + map.value[j + 1]);
  map.threshold[255] = INFINITY;
  return map;
}

}  // namespace

const DynamicMap& dynamic_map(bool is_signed) {
  static const DynamicMap kSigned = build(true);
  static const DynamicMap kUnsigned = build(false);
  return is_signed ? kSigned : kUnsigned;
}

}  // namespace nibble::optim
