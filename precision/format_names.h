#pragma once
// Format names as users write them ("e4m3", "e2m1", "e3m4_ieee", ...) and back.
#include <string>
#include <string_view>

#include "precision/format.h"

namespace nibble::precision {

// Parses a format name. Named formats: e4m3 (= e4m3fn), e5m2, e2m1, e3m2, e2m3, e8m0, ue4m3, bf16, fp16.
// Any other "eXmY" (1 <= X <= 8, 0 <= Y <= 10, 1 + X + Y <= 16) is a research format with bias 2^(X-1)-1,
// subnormals and, by default, no Inf/NaN ("finite"); the suffix "_ieee" reserves the top exponent for
// Inf/NaN, "_fn" reserves only the all-ones code for NaN. Throws InvalidArgument naming the valid choices.
Format parse_format(std::string_view name);

// The canonical name of a format ("e4m3", "e3m4_ieee", ...).
std::string format_name(const Format& fmt);

// Words for error messages: the accepted spellings.
std::string_view format_name_help();

}  // namespace nibble::precision
