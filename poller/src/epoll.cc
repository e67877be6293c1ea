// epoll backend: EPOLLET registration once per fd for both directions, an
// eventfd for wake-ups, and epoll_pwait2 for nanosecond timeouts (Linux
// 5.11+; older kernels fall back to epoll_wait with the timeout rounded up
// to whole milliseconds, never down).
#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "epoll_backend.h"

namespace weft::poll {
namespace {

// The token of the wake-up eventfd; real tokens are never zero.
constexpr std::uint64_t kWakeToken = 0;
constexpr int kMaxBatch = 128;

class EpollPoller final : public Poller {
 public:
  EpollPoller(int epfd, int wakefd) : epfd_(epfd), wakefd_(wakefd) {}
  ~EpollPoller() override {
    ::close(wakefd_);
    ::close(epfd_);
  }

  const char* name() const override { return "epoll"; }

  std::error_code add(int fd, std::uint64_t token) override {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = token;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) return {errno, std::system_category()};
    return {};
  }

  std::error_code remove(int fd, std::uint64_t) override {
    epoll_event ev{};  // non-null for kernels before 2.6.9
    if (epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, &ev) != 0) return {errno, std::system_category()};
    return {};
  }

  int wait(Event* out, int max, std::int64_t timeout_ns) override {
    epoll_event evs[kMaxBatch];
    if (max > kMaxBatch) max = kMaxBatch;
    int n;
    if (timeout_ns > 0 && has_pwait2_.load(std::memory_order_relaxed)) {
      timespec ts{static_cast<time_t>(timeout_ns / 1'000'000'000),
                  static_cast<long>(timeout_ns % 1'000'000'000)};
      n = epoll_pwait2(epfd_, evs, max, &ts, nullptr);
      if (n < 0 && errno == ENOSYS) {
        has_pwait2_.store(false, std::memory_order_relaxed);
        return wait(out, max, timeout_ns);
      }
    } else {
      int ms = -1;
      if (timeout_ns == 0) {
        ms = 0;
      } else if (timeout_ns > 0) {
        const std::int64_t rounded_up = (timeout_ns + 999'999) / 1'000'000;
        ms = rounded_up > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(rounded_up);
      }
      n = epoll_wait(epfd_, evs, max, ms);
    }
    if (n < 0) return 0;  // EINTR: the caller recomputes its timeout
    int count = 0;
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.u64 == kWakeToken) {
        // Only a blocking wait consumes the wake-up: it is meant for the
        // worker blocked in the poller, not for a busy one polling.
        if (timeout_ns != 0) drain_wake();
        continue;
      }
      const std::uint32_t e = evs[i].events;
      std::uint32_t ready = 0;
      if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ready |= kReadable;
      if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) ready |= kWritable;
      if (e == EPOLLERR) ready |= kError;
      out[count++] = Event{evs[i].data.u64, ready};
    }
    return count;
  }

  void wake() override {
    // One pending wake-up is enough, as Go's netpollBreak.
    if (wake_pending_.exchange(true, std::memory_order_acq_rel)) return;
    const std::uint64_t one = 1;
    while (::write(wakefd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }

 private:
  void drain_wake() {
    // Clear the flag before draining: a wake() in between then writes again
    // (a spurious wake-up later) instead of being swallowed.
    wake_pending_.store(false, std::memory_order_seq_cst);
    std::uint64_t value;
    while (::read(wakefd_, &value, sizeof value) < 0 && errno == EINTR) {
    }
  }

  const int epfd_;
  const int wakefd_;
  std::atomic<bool> wake_pending_{false};
  std::atomic<bool> has_pwait2_{true};
};

}  // namespace

std::unique_ptr<Poller> make_epoll_poller(std::string* why) {
  const int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) {
    if (why) *why = std::string("epoll_create1: ") + std::strerror(errno);
    return nullptr;
  }
  const int wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakefd < 0) {
    if (why) *why = std::string("eventfd: ") + std::strerror(errno);
    ::close(epfd);
    return nullptr;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered: stays ready until drained
  ev.data.u64 = kWakeToken;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, wakefd, &ev) != 0) {
    if (why) *why = std::string("epoll_ctl(eventfd): ") + std::strerror(errno);
    ::close(wakefd);
    ::close(epfd);
    return nullptr;
  }
  return std::make_unique<EpollPoller>(epfd, wakefd);
}

}  // namespace weft::poll
