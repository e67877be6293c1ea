// Printing weft's values the way a user first tries: operator<< and fmt,
// each giving Go's text; and Result::value_or.
#include <gtest/gtest.h>

#include <memory>
#include <sstream>
#include <string>

#include "weft/fmt.h"
#include "weft/net.h"

namespace {

using weft::net::Addr;
using weft::net::IP;
using weft::net::OpError;
using weft::net::Result;

OpError refused() {
  OpError e(std::make_error_code(std::errc::connection_refused));
  e.op = "dial";
  e.net = "tcp";
  e.addr = Addr::ip_port("tcp", IP::loopback_v4(), 1);
  e.syscall = "connect";
  return e;
}

template <class T>
std::string streamed(const T& value) {
  std::ostringstream os;
  os << value;
  return os.str();
}

TEST(Printing, OpErrorStreamsAsGosErrorText) {
  const OpError e = refused();
  EXPECT_EQ(streamed(e), "dial tcp 127.0.0.1:1: connect: connection refused");
  EXPECT_EQ(streamed(e), e.to_string());
  Result<int> r = e;
  EXPECT_EQ(streamed(r.error()), e.to_string());
}

TEST(Printing, AddressesAndCodesStreamAsText) {
  EXPECT_EQ(streamed(Addr::ip_port("tcp", IP::loopback_v6(), 80)), "[::1]:80");
  EXPECT_EQ(streamed(IP::loopback_v4()), "127.0.0.1");
  EXPECT_EQ(streamed(weft::net::net_errc::unexpected_eof), "unexpected EOF");
  EXPECT_EQ(streamed(weft::errc::canceled), "context canceled");
}

TEST(Printing, FmtFormatsTheSameTexts) {
  const OpError e = refused();
  EXPECT_EQ(fmt::format("{}", e), e.to_string());
  EXPECT_EQ(fmt::format("[{:>12}]", IP::loopback_v4()), "[   127.0.0.1]");
  EXPECT_EQ(fmt::format("{}", Addr::unix_name("unix", "/tmp/s")), "/tmp/s");
  EXPECT_EQ(fmt::format("{}", weft::errc::deadline_exceeded), "context deadline exceeded");
  EXPECT_EQ(fmt::format("{}", weft::net::net_errc::no_such_host), "no such host");
}

TEST(ResultValueOr, GivesTheValueOrTheFallback) {
  Result<int> ok = 3;
  Result<int> failed = refused();
  EXPECT_EQ(ok.value_or(7), 3);
  EXPECT_EQ(failed.value_or(7), 7);
  Result<std::string> name = std::string("weft");
  EXPECT_EQ(name.value_or("none"), "weft");
  EXPECT_EQ(Result<std::string>(refused()).value_or("none"), "none");
  // Move-only values come out of an rvalue result.
  auto owned = Result<std::unique_ptr<int>>(std::make_unique<int>(5)).value_or(nullptr);
  ASSERT_TRUE(owned);
  EXPECT_EQ(*owned, 5);
  EXPECT_EQ(Result<std::unique_ptr<int>>(refused()).value_or(nullptr), nullptr);
}

}  // namespace
