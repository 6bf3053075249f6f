// fna::Error: every invalid input and every unusable configuration raises one.
#pragma once

#include <stdexcept>
#include <string>

namespace fna {

enum class ErrorKind {
  kInvalidArgument,  // a value breaks a rule (shape, range, pointer, overlap, ...)
  kTypeError,        // a dtype is wrong or unsupported
  kNotAvailable,     // a backend is not compiled in or not usable on this machine
  kRuntime,          // a failure while running (e.g. a CUDA error)
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace fna
