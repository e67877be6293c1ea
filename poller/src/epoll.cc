// epoll backend: EPOLLET registration once per fd for both directions, an
// eventfd for wake-ups, and epoll_pwait2 for nanosecond timeouts (Linux
// 5.11+; older kernels fall back to epoll_wait with the timeout rounded up
// to whole milliseconds, never down).
#include <errno.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "epoll_backend.h"
#include "wake_fd.h"

namespace weft::poll {
namespace {

// The token of the wake-up eventfd; real tokens are never zero.
constexpr std::uint64_t kWakeToken = 0;
constexpr int kMaxBatch = 128;

class EpollPoller final : public Poller {
 public:
  explicit EpollPoller(int epfd) : epfd_(epfd) {}
  ~EpollPoller() override { ::close(epfd_); }

  const char* name() const override { return "epoll"; }

  int wake_fd() const { return wake_.fd(); }

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
        // worker blocked in the poller, not for a busy one polling. (The
        // eventfd is level-triggered, so it stays reported until then.)
        if (timeout_ns != 0) wake_.drain();
        continue;
      }
      out[count++] = Event{evs[i].data.u64, ready_bits(evs[i].events)};
    }
    return count;
  }

  void wake() override { wake_.wake(); }

 private:
  const int epfd_;
  WakeFd wake_;
  std::atomic<bool> has_pwait2_{true};
};

}  // namespace

std::unique_ptr<Poller> make_epoll_poller(std::string* why) {
  const int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) {
    if (why) *why = std::string("epoll_create1: ") + std::strerror(errno);
    return nullptr;
  }
  auto poller = std::make_unique<EpollPoller>(epfd);
  if (poller->wake_fd() < 0) {
    if (why) *why = std::string("eventfd: ") + std::strerror(errno);
    return nullptr;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered: stays ready until drained
  ev.data.u64 = kWakeToken;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, poller->wake_fd(), &ev) != 0) {
    if (why) *why = std::string("epoll_ctl(eventfd): ") + std::strerror(errno);
    return nullptr;
  }
  return poller;
}

}  // namespace weft::poll
