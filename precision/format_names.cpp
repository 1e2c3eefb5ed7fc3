#include "precision/format_names.h"

#include <cctype>
#include <string>

#include "precision/error.h"

namespace nibble::precision {
namespace {

struct NamedFormat {
  std::string_view name;
  Format format;
};

constexpr NamedFormat kNamed[] = {
    {"e4m3", formats::kE4M3}, {"e5m2", formats::kE5M2}, {"e2m1", formats::kE2M1},
    {"e3m2", formats::kE3M2}, {"e2m3", formats::kE2M3}, {"e8m0", formats::kE8M0},
    {"ue4m3", formats::kUE4M3}, {"bf16", formats::kBF16}, {"fp16", formats::kFP16},
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

[[noreturn]] void reject(std::string_view name, std::string_view why) {
  throw InvalidArgument("unknown element format '" + std::string(name) + "'" +
                        (why.empty() ? std::string() : " (" + std::string(why) + ")") + "; valid: " +
                        std::string(format_name_help()));
}

// Reads the decimal number at s[pos...]; returns -1 if there is none.
int read_number(const std::string& s, size_t& pos) {
  int value = -1;
  while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
    value = (value < 0 ? 0 : value * 10) + (s[pos] - '0');
    if (value > 99) return 100;
    ++pos;
  }
  return value;
}

}  // namespace

std::string_view format_name_help() {
  return "e4m3, e5m2, e2m1, e3m2, e2m3, e8m0, ue4m3, bf16, fp16, or a research format eXmY "
         "(1<=X<=8, 0<=Y<=10, at most 16 bits; optional suffix _ieee or _fn for Inf/NaN codes)";
}

Format parse_format(std::string_view name) {
  const std::string s = lower(name);
  for (const auto& named : kNamed)
    if (s == named.name) return named.format;
  if (s == "e4m3fn") return formats::kE4M3;
  if (s.empty() || s[0] != 'e') reject(name, "");
  size_t pos = 1;
  const int e = read_number(s, pos);
  if (e < 0 || pos >= s.size() || s[pos] != 'm') reject(name, "expected eXmY");
  ++pos;
  const int m = read_number(s, pos);
  if (m < 0) reject(name, "expected eXmY");
  Special special = Special::kFinite;
  const std::string suffix = s.substr(pos);
  if (suffix == "_ieee") {
    special = Special::kIEEE;
  } else if (suffix == "_fn" || suffix == "fn") {
    special = Special::kFN;
  } else if (!suffix.empty()) {
    reject(name, "unknown suffix '" + suffix + "'");
  }
  if (e < 1 || e > 8) reject(name, "exponent bits must be 1..8");
  if (m > 10) reject(name, "mantissa bits must be 0..10");
  if (1 + e + m > 16) reject(name, "more than 16 bits");
  if (special == Special::kIEEE && e < 2) reject(name, "_ieee needs at least 2 exponent bits");
  if (special == Special::kFN && e + m < 2) reject(name, "_fn needs at least 2 magnitude bits");
  return make_exmy(e, m, special);
}

std::string format_name(const Format& fmt) {
  for (const auto& named : kNamed)
    if (fmt == named.format) return std::string(named.name);
  std::string name = "e" + std::to_string(fmt.ebits) + "m" + std::to_string(fmt.mbits);
  if (fmt.special == Special::kIEEE) name += "_ieee";
  if (fmt.special == Special::kFN) name += "_fn";
  if (fmt.bias != (1 << (fmt.ebits - 1)) - 1 || !fmt.is_signed || !fmt.has_subnormals)
    name += "(bias=" + std::to_string(fmt.bias) + (fmt.is_signed ? "" : ",unsigned") + ")";
  return name;
}

}  // namespace nibble::precision
