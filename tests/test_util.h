// Shared helpers for the suites.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "weft/poller.h"

namespace weft::test {

// Stress loops run `base` times by default; `./weft test --long` sets
// WEFT_STRESS_SCALE to run them many times longer.
inline int stress_iterations(int base) {
  const char* scale = std::getenv("WEFT_STRESS_SCALE");
  long factor = scale ? std::strtol(scale, nullptr, 10) : 1;
  if (factor < 1) factor = 1;
  return static_cast<int>(base * factor);
}

// For death tests of exceptions that escape a fiber: destroyed, ending the
// process with status 42 instead of the expected abort, only if the stack is
// unwound before the process dies, which would leave the core dump and gdb
// without the throw site.
struct ExitIfUnwound {
  ExitIfUnwound() = default;
  ExitIfUnwound(const ExitIfUnwound&) = delete;
  ExitIfUnwound& operator=(const ExitIfUnwound&) = delete;
  ~ExitIfUnwound() { std::_Exit(42); }
};

// Names parametrised cases by worker count: "w1", "w2", ...
inline std::string workers_name(const ::testing::TestParamInfo<int>& info) {
  std::string name = "w";  // built in steps: GCC 12 -O3 warns on "w" + string
  name += std::to_string(info.param);
  return name;
}

// Every poller backend built into this weft.
inline std::vector<std::string> poller_backends() {
  std::vector<std::string> names;
  for (const char* const* n = weft::poll::available_backends(); *n; ++n) names.emplace_back(*n);
  return names;
}

}  // namespace weft::test
