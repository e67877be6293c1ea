#include "env.h"

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace weft::detail {
namespace {

bool equal_ignoring_case(const char* a, const char* b) {
  // ASCII only: the names are ASCII, and the locale must not change them.
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  for (; *a && *b; ++a, ++b) {
    if (lower(*a) != lower(*b)) return false;
  }
  return *a == *b;
}

void reject(const char* name, const char* value, const std::string& expected, const char* instead) {
  std::fprintf(stderr, "weft: %s='%s' rejected (expected %s); %s\n", name, value, expected.c_str(),
               instead);
}

}  // namespace

const char* env_value(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

std::optional<int> env_word(const char* name, const char* const* accepted, const char* instead) {
  const char* v = env_value(name);
  if (!v) return std::nullopt;
  std::string expected = "one of";
  for (int i = 0; accepted[i]; ++i) {
    if (equal_ignoring_case(v, accepted[i])) return i;
    expected += (i == 0 ? " " : ", ") + std::string(accepted[i]);
  }
  reject(name, v, expected + ", in any case", instead);
  return std::nullopt;
}

std::optional<std::uint64_t> env_number(const char* name, std::uint64_t lo, std::uint64_t hi,
                                        const char* expected, const char* instead) {
  const char* v = env_value(name);
  if (!v) return std::nullopt;
  const char* end = v + std::strlen(v);
  std::uint64_t n = 0;
  // from_chars, not strtoul: no sign, no leading blanks, no "0x".
  const auto [stop, err] = std::from_chars(v, end, n);
  if (err == std::errc{} && stop == end && n >= lo && n <= hi) return n;
  reject(name, v, expected, instead);
  return std::nullopt;
}

}  // namespace weft::detail
