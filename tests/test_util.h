// Shared helpers for the suites.
#pragma once

#include <cstdlib>
#include <string>

namespace weft::test {

// Stress loops run `base` times by default; `./weft test --long` sets
// WEFT_STRESS_SCALE to run them many times longer.
inline int stress_iterations(int base) {
  const char* scale = std::getenv("WEFT_STRESS_SCALE");
  long factor = scale ? std::strtol(scale, nullptr, 10) : 1;
  if (factor < 1) factor = 1;
  return static_cast<int>(base * factor);
}

}  // namespace weft::test
