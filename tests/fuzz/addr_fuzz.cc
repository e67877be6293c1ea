// libFuzzer target: the address round-trip property (tests/net/
// addr_round_trip.h) on any input. Built only with -Dfuzz=true (clang; the
// library is then instrumented for coverage too); `./weft test --long` builds
// it in build/fuzz under ASan+UBSan and runs it briefly. By hand:
//   build/fuzz/tests/fuzz/weft-addr-fuzz -dict=tests/fuzz/addr.dict \
//       build/fuzz/addr-corpus tests/fuzz/addr-seeds
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "addr_round_trip.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::string why = weft::test::addr_round_trip_failure(input);
  if (!why.empty()) {
    std::fprintf(stderr, "weft-addr-fuzz: %s\n", why.c_str());
    std::abort();
  }
  return 0;
}
