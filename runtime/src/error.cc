#include "weft/error.h"

#include <cerrno>
#include <ostream>
#include <string>

namespace weft {

namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "weft"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::canceled:
        return "context canceled";
      case errc::deadline_exceeded:
        return "context deadline exceeded";
      case errc::timeout:
        return "i/o timeout";
      case errc::closed:
        return "use of closed network connection";
      case errc::operation_canceled:
        return "operation was canceled";
      case errc::eof:
        return "EOF";
      case errc::missing_address:
        return "missing address";
      case errc::no_suitable_address:
        return "no suitable address found";
      case errc::no_runtime:
        return "no weft runtime is running (call inside weft::run)";
      case errc::exceeds_semaphore_size:
        return "semaphore acquire larger than its size";
    }
    return "unknown weft error " + std::to_string(value);
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const Category category;
  return category;
}

bool is_timeout(const std::error_code& ec) noexcept {
  if (ec.category() == error_category()) {
    return ec == errc::timeout || ec == errc::deadline_exceeded;
  }
  if (ec.category() == std::system_category() || ec.category() == std::generic_category()) {
    return ec.value() == ETIMEDOUT || ec.value() == EAGAIN || ec.value() == EWOULDBLOCK;
  }
  return false;
}

bool is_canceled(const std::error_code& ec) noexcept {
  return ec == errc::canceled || ec == errc::operation_canceled;
}

std::ostream& operator<<(std::ostream& os, errc e) {
  return os << make_error_code(e).message();
}

}  // namespace weft
