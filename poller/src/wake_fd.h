// What every backend shares: the readiness bits for a poll(2)-style event
// mask, and the eventfd that wakes a blocked wait.
#pragma once

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

#include "weft/poller.h"

namespace weft::poll {

// EPOLLIN/POLLIN and friends share their values on Linux.
inline std::uint32_t ready_bits(std::uint32_t mask) {
  std::uint32_t ready = 0;
  if (mask & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) ready |= kReadable;
  if (mask & (POLLOUT | POLLHUP | POLLERR)) ready |= kWritable;
  if (mask == POLLERR) ready |= kError;  // an error alone: readers are told
  return ready;
}

// One pending wake-up at a time, as Go's netpollBreak.
class WakeFd {
 public:
  WakeFd() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~WakeFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  WakeFd(const WakeFd&) = delete;
  WakeFd& operator=(const WakeFd&) = delete;

  int fd() const { return fd_; }

  void wake() {
    if (pending_.exchange(true, std::memory_order_acq_rel)) return;
    const std::uint64_t one = 1;
    while (::write(fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }

  // Clear first, then drain: a wake() in between writes again (a spurious
  // wake-up later) instead of being swallowed, which left a blocked waiter
  // sleeping past an earlier timer.
  void drain() {
    pending_.store(false, std::memory_order_seq_cst);
    std::uint64_t value;
    while (::read(fd_, &value, sizeof value) < 0 && errno == EINTR) {
    }
  }

 private:
  const int fd_;
  std::atomic<bool> pending_{false};
};

}  // namespace weft::poll
