#pragma once
// nibble's errors: an exception that says what failed, the offending value, and what would be valid.
#include <stdexcept>
#include <string>

namespace nibble {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Input that breaks a documented rule (bad format name, odd FP4 length, NaN under the error policy).
class InvalidArgument : public Error {
 public:
  explicit InvalidArgument(const std::string& what) : Error(what) {}
};

}  // namespace nibble
