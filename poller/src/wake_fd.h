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
  if (mask & (POLLRDHUP | POLLHUP | POLLERR)) ready |= kHangup;
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
    if (pending_.exchange(true, std::memory_order_seq_cst)) return;
    signal();
  }

  // Clear first, then drain: a wake() after the clear writes again instead
  // of being swallowed (which left a blocked waiter sleeping past an earlier
  // timer). But the read may eat that very write while the flag stays set,
  // and a set flag with an empty eventfd swallows every later wake() for
  // good (a worker slept in epoll_wait through shutdown that way): so when
  // the flag is set again after the read, put the signal back. At worst
  // that costs one spurious wake-up.
  void drain() {
    pending_.store(false, std::memory_order_seq_cst);
    std::uint64_t value;
    while (::read(fd_, &value, sizeof value) < 0 && errno == EINTR) {
    }
    if (pending_.load(std::memory_order_seq_cst)) signal();
  }

 private:
  void signal() {
    const std::uint64_t one = 1;
    while (::write(fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }

  const int fd_;
  std::atomic<bool> pending_{false};
};

}  // namespace weft::poll
