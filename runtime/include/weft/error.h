// weft's own error values, with Go's texts, in one std::error_category. Go's
// sentinel errors become these codes; errno values stay std::system_category.
#pragma once

#include "weft/detail/cxx20.h"

#include <iosfwd>
#include <system_error>

namespace weft {

enum class errc {
  canceled = 1,         // "context canceled": a context's cancel function ran
  deadline_exceeded,    // "context deadline exceeded": a context's deadline passed
  timeout,              // "i/o timeout": a socket deadline passed (Go's ErrDeadlineExceeded)
  closed,               // "use of closed network connection"
  operation_canceled,   // "operation was canceled": a dial/lookup stopped by its context
  eof,                  // "EOF": the peer closed its end; distinct from `closed`
  missing_address,      // "missing address"
  no_suitable_address,  // "no suitable address found"
  // Not Go's: "no weft runtime is running (call inside weft::run)", from a
  // call that needs the poller, the blocking pool or fibers made where no
  // runtime runs. The APIs that cannot return an error abort with this text.
  no_runtime,
  // Not Go's (whose Acquire blocks forever there): "semaphore acquire larger
  // than its size", from weft::Semaphore asked for more than it can ever hold.
  exceeds_semaphore_size,
};

const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

// Go's Timeout(): deadline errors, context deadlines, and ETIMEDOUT/EAGAIN.
bool is_timeout(const std::error_code& ec) noexcept;
// Go's errors.Is(err, context.Canceled): the context error and the net
// error it becomes ("operation was canceled").
bool is_canceled(const std::error_code& ec) noexcept;

// Go's text ("context canceled"), not std::error_code's "weft:1".
std::ostream& operator<<(std::ostream& os, errc e);

}  // namespace weft

template <>
struct std::is_error_code_enum<weft::errc> : std::true_type {};
