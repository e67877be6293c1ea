// Result values for net/: an OpError (Go's *net.OpError) or a value, and
// IoResult for reads and writes, which report a byte count together with an
// error (Go's (n, err)). No exceptions on I/O paths.
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <variant>

#include "weft/error.h"
#include "weft/net/addr.h"

namespace weft::net {

// Go's net-package errors that weft::errc does not cover, in their own
// category with Go's texts.
enum class net_errc {
  unexpected_eof = 1,  // "unexpected EOF": io.ReadFull's short read, a zero-byte write
  invalid_address,     // an AddrError (the text is in OpError::detail)
  unknown_network,     // "unknown network X"
  no_such_host,        // "no such host" (a DNSError; the text says which name)
  unknown_port,        // "unknown port"
  not_pollable,        // "not pollable": the poller reported an error on the fd
  no_such_interface,   // "no such network interface": a zone that names none
};
const std::error_category& net_category() noexcept;
inline std::error_code make_error_code(net_errc e) noexcept {
  return {static_cast<int>(e), net_category()};
}

}  // namespace weft::net

template <>
struct std::is_error_code_enum<weft::net::net_errc> : std::true_type {};

namespace weft::net {

// Go's *net.OpError: "op net [src->]addr: [syscall: ]err". An OpError with an
// empty `op` is a bare error (Go returns io.EOF unwrapped, and address parse
// errors are plain AddrErrors): it prints only the cause.
struct OpError {
  std::string op;   // "dial", "listen", "accept", "read", "write", "close", "set"
  std::string net;  // "tcp", "tcp4", "udp", "unix", ...
  std::optional<Addr> source;
  std::optional<Addr> addr;
  std::string syscall;  // the failing syscall ("connect", "read"...), or empty
  std::error_code err;  // what went wrong: an errno, or a weft::errc
  std::string detail;   // replaces err.message() in the text when set (AddrError...)

  OpError() = default;
  explicit OpError(std::error_code e) : err(e) {}
  OpError(std::error_code e, std::string why) : err(e), detail(std::move(why)) {}

  // Go's Error() string.
  std::string to_string() const;
  // The cause alone, as Go's Unwrap (syscall errors included) would print it.
  std::string cause() const;
  bool is_timeout() const noexcept { return weft::is_timeout(err); }
  bool is_canceled() const noexcept { return weft::is_canceled(err); }
  const std::error_code& code() const noexcept { return err; }

  friend bool operator==(const OpError& e, const std::error_code& c) noexcept { return e.err == c; }
  friend bool operator==(const OpError& e, weft::errc c) noexcept { return e.err == c; }
  friend bool operator==(const OpError& e, std::errc c) noexcept { return e.err == c; }
  friend bool operator==(const OpError& e, net_errc c) noexcept { return e.err == c; }
};

// Go's Error() text, as fmt.Println(err) prints it (weft/fmt.h formats it
// for fmt too).
std::ostream& operator<<(std::ostream& os, const OpError& e);
// net_errc's text ("unexpected EOF", ...), not std::error_code's
// "category:number".
std::ostream& operator<<(std::ostream& os, net_errc e);

[[noreturn]] inline void bad_result_access(const OpError& e) {
  std::fprintf(stderr, "weft::net: value() of a failed result: %s\n", e.to_string().c_str());
  std::abort();
}

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}        // NOLINT: implicit
  Result(OpError error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & {
    if (!has_value()) bad_result_access(std::get<1>(v_));
    return std::get<0>(v_);
  }
  const T& value() const& {
    if (!has_value()) bad_result_access(std::get<1>(v_));
    return std::get<0>(v_);
  }
  T&& value() && {
    if (!has_value()) bad_result_access(std::get<1>(v_));
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  // The value, or `fallback` on failure (std::optional's value_or).
  template <class U>
  T value_or(U&& fallback) const& {
    return has_value() ? std::get<0>(v_) : static_cast<T>(std::forward<U>(fallback));
  }
  template <class U>
  T value_or(U&& fallback) && {
    return has_value() ? std::get<0>(std::move(v_)) : static_cast<T>(std::forward<U>(fallback));
  }

  // Only on failure.
  const OpError& error() const& { return std::get<1>(v_); }
  OpError& error() & { return std::get<1>(v_); }
  OpError&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, OpError> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(OpError error) : error_(std::make_unique<OpError>(std::move(error))) {}  // NOLINT
  Result(const Result& other)
      : error_(other.error_ ? std::make_unique<OpError>(*other.error_) : nullptr) {}
  Result& operator=(const Result& other) {
    if (this != &other) *this = Result(other);
    return *this;
  }
  Result(Result&&) noexcept = default;
  Result& operator=(Result&&) noexcept = default;

  bool has_value() const noexcept { return !error_; }
  explicit operator bool() const noexcept { return has_value(); }
  void value() const {
    if (error_) bad_result_access(*error_);
  }
  const OpError& error() const& { return *error_; }
  OpError&& error() && { return std::move(*error_); }

 private:
  // On the heap, as IoResult's: a server sets a deadline before each wait,
  // and the frame that does holds one of these.
  std::unique_ptr<OpError> error_;
};

// A read or write: `n` bytes moved, and possibly an error. A write that fails
// part way reports what it did write (Go's Write contract); a read reports
// n == 0 with every error.
class [[nodiscard]] IoResult {
 public:
  IoResult() = default;
  explicit IoResult(std::size_t n) : n_(n) {}
  IoResult(std::size_t n, OpError error)
      : n_(n), error_(std::make_unique<OpError>(std::move(error))) {}
  IoResult(const IoResult& other)
      : n_(other.n_), error_(other.error_ ? std::make_unique<OpError>(*other.error_) : nullptr) {}
  IoResult& operator=(const IoResult& other) {
    if (this != &other) *this = IoResult(other);
    return *this;
  }
  IoResult(IoResult&&) noexcept = default;
  IoResult& operator=(IoResult&&) noexcept = default;

  bool has_value() const noexcept { return !error_; }
  explicit operator bool() const noexcept { return has_value(); }
  // The byte count, valid with or without an error.
  std::size_t value() const noexcept { return n_; }
  std::size_t operator*() const noexcept { return n_; }
  std::size_t count() const noexcept { return n_; }
  // Only on failure.
  const OpError& error() const& { return *error_; }
  OpError& error() & { return *error_; }
  // True when the error is the peer's orderly shutdown (bare EOF).
  bool is_eof() const noexcept { return error_ && error_->err == weft::errc::eof; }

 private:
  std::size_t n_ = 0;
  // On the heap, not inline: an OpError is some 250 bytes, and every frame
  // on a read's way down to its park holds an IoResult, all of which a
  // reader keeps on its stack for as long as its connection is idle (a
  // stack given back while idle keeps them aside: runtime/src/idle_stack.h).
  std::unique_ptr<OpError> error_;
};

}  // namespace weft::net
