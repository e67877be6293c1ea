// fmt support for weft's printable values, opt-in: include this (with fmt
// on the include path) to write fmt::print("{}\n", result.error()). No other
// weft header includes fmt, so a project without it never needs it. Each
// prints what operator<< prints: Go's texts.
#pragma once

#include <fmt/format.h>

#include <string_view>

#include "weft/error.h"
#include "weft/net/addr.h"
#include "weft/net/result.h"

namespace weft::detail {

// One formatter for every type that prints through a to-string function.
template <class T, auto ToString>
struct StringFormatter : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const T& value, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(ToString(value), ctx);
  }
};

inline std::string op_error_text(const net::OpError& e) {
  return e.to_string();
}
inline std::string addr_text(const net::Addr& a) {
  return a.to_string();
}
inline std::string ip_text(const net::IP& ip) {
  return ip.to_string();
}
inline std::string errc_text(const errc& e) {
  return make_error_code(e).message();
}
inline std::string net_errc_text(const net::net_errc& e) {
  return make_error_code(e).message();
}

}  // namespace weft::detail

template <>
struct fmt::formatter<weft::net::OpError>
    : weft::detail::StringFormatter<weft::net::OpError, &weft::detail::op_error_text> {};
template <>
struct fmt::formatter<weft::net::Addr>
    : weft::detail::StringFormatter<weft::net::Addr, &weft::detail::addr_text> {};
template <>
struct fmt::formatter<weft::net::IP>
    : weft::detail::StringFormatter<weft::net::IP, &weft::detail::ip_text> {};
template <>
struct fmt::formatter<weft::errc>
    : weft::detail::StringFormatter<weft::errc, &weft::detail::errc_text> {};
template <>
struct fmt::formatter<weft::net::net_errc>
    : weft::detail::StringFormatter<weft::net::net_errc, &weft::detail::net_errc_text> {};
