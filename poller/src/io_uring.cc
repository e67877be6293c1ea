// io_uring backend: one multishot POLL_ADD per fd (edge-triggered, both
// directions, registered once; re-armed if the kernel ends it), an eventfd
// polled the same way for wake-ups, and waits through io_uring_enter with a
// nanosecond timespec (IORING_FEAT_EXT_ARG, Linux 5.11+).
//
// Threads: submissions (add/remove/re-arm) go through sq_mu_; one thread at
// a time reads completions (cq_mu_). The blocking waiter enters the kernel
// with the raw syscall, so liburing never flushes the SQ outside sq_mu_.
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "io_uring_backend.h"
#include "wake_fd.h"

namespace weft::poll {
namespace {

constexpr std::uint64_t kWakeToken = 0;
constexpr std::uint64_t kRemoveToken = 1;  // completions of POLL_REMOVE itself
constexpr unsigned kEvents = POLLIN | POLLOUT | POLLRDHUP;

class UringPoller final : public Poller {
 public:
  explicit UringPoller(const io_uring& ring) : ring_(ring) {
    std::lock_guard lock(sq_mu_);
    arm_locked(wake_.fd(), kWakeToken, POLLIN);
    io_uring_submit(&ring_);
  }
  ~UringPoller() override { io_uring_queue_exit(&ring_); }

  int wake_fd() const { return wake_.fd(); }

  const char* name() const override { return "io_uring"; }

  std::error_code add(int fd, std::uint64_t token) override {
    // The poll's own errors arrive later as completions; catch the obvious
    // one now so that callers get it where they expect it.
    if (fcntl(fd, F_GETFD) < 0) return {errno, std::system_category()};
    std::lock_guard lock(sq_mu_);
    fds_[token] = fd;
    arm_locked(fd, token, kEvents);
    const int r = io_uring_submit(&ring_);
    if (r < 0) {
      fds_.erase(token);
      return {-r, std::system_category()};
    }
    return {};
  }

  std::error_code remove(int, std::uint64_t token) override {
    std::lock_guard lock(sq_mu_);
    if (fds_.erase(token) == 0) return std::make_error_code(std::errc::no_such_file_or_directory);
    removing_.insert(token);
    remove_locked(token);
    const int r = io_uring_submit(&ring_);
    if (r < 0) return {-r, std::system_category()};
    return {};
  }

  // io_uring_cq_ready() reads the head with a plain load; here it runs without
  // the completion lock while a reaper may advance the head, so both ends are
  // read atomically (TSan saw the plain read race with io_uring_cq_advance).
  unsigned cq_ready_unlocked() const {
    const unsigned tail = __atomic_load_n(ring_.cq.ktail, __ATOMIC_ACQUIRE);
    const unsigned head = __atomic_load_n(ring_.cq.khead, __ATOMIC_ACQUIRE);
    return tail - head;
  }

  int wait(Event* out, int max, std::int64_t timeout_ns) override {
    // A wake-up that a non-blocking poll came across is the blocking
    // waiter's: the eventfd's poll is edge-triggered and will not report it
    // again.
    const bool wake_pending = timeout_ns != 0 && wake_seen_.exchange(false);
    if (wake_pending) wake_.drain();
    // Sleep in the kernel without holding the completion lock, so that busy
    // workers can still reap (as with epoll, where waits run concurrently);
    // if one of them takes our completion, this wait just returns empty.
    if (timeout_ns != 0 && !wake_pending && cq_ready_unlocked() == 0) {
      __kernel_timespec ts{};
      io_uring_getevents_arg arg{};
      if (timeout_ns > 0) {
        ts.tv_sec = timeout_ns / 1'000'000'000;
        ts.tv_nsec = timeout_ns % 1'000'000'000;
        arg.ts = reinterpret_cast<std::uint64_t>(&ts);
      }
      // ETIME on timeout, EINTR on a signal: both just mean "look again".
      io_uring_enter2(ring_.ring_fd, 0, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
                      reinterpret_cast<sigset_t*>(&arg), sizeof arg);
    }
    // Completions that found the ring full wait in the kernel until someone
    // enters it, and a busy runtime polls without ever blocking: without
    // this, one fd that completes on every send (a UDP socket's POLLOUT)
    // filled the ring once and every readiness after it stayed there.
    if (io_uring_cq_has_overflow(&ring_)) {
      io_uring_enter2(ring_.ring_fd, 0, 0, IORING_ENTER_GETEVENTS, nullptr, 0);
    }
    std::unique_lock cq(cq_mu_, std::defer_lock);
    if (timeout_ns == 0) {
      if (!cq.try_lock()) return 0;  // someone is reaping already
    } else {
      cq.lock();
    }
    int count = 0;
    std::vector<std::uint64_t> rearm;
    bool remove_refused = false;
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      if (count == max) break;
      ++seen;
      const std::uint64_t token = io_uring_cqe_get_data64(cqe);
      const bool more = cqe->flags & IORING_CQE_F_MORE;
      if (token == kRemoveToken) {
        // -EALREADY: the poll was delivering a completion and could not be
        // cancelled. A multishot poll then stays armed, and keeps its file,
        // and so the socket, alive for good: the fd is closed but the peer
        // never sees its FIN or RST (a reader and a writer parked on the
        // other end slept through a reset about 1 run in 20 with 2 workers).
        if (cqe->res == -EALREADY) remove_refused = true;
        continue;
      }
      if (token == kWakeToken) {
        if (timeout_ns != 0) {
          wake_.drain();
        } else {
          wake_seen_.store(true);
        }
        if (!more) rearm.push_back(kWakeToken);
        continue;
      }
      if (!more) rearm.push_back(token);  // ended (error, or the kernel's choice)
      if (cqe->res <= 0) continue;        // -ECANCELED after remove(), or an error
      out[count++] = Event{token, ready_bits(static_cast<std::uint32_t>(cqe->res))};
    }
    io_uring_cq_advance(&ring_, seen);
    cq.unlock();
    if (!rearm.empty() || remove_refused) {
      std::lock_guard lock(sq_mu_);
      for (std::uint64_t token : rearm) {
        if (token == kWakeToken) {
          arm_locked(wake_.fd(), kWakeToken, POLLIN);
          continue;
        }
        auto it = fds_.find(token);
        if (it != fds_.end()) {
          arm_locked(it->second, token, kEvents);  // still wanted
        } else {
          removing_.erase(token);  // its poll has ended: removed for good
        }
      }
      // A remove's completion does not say whose it was: send one again for
      // every poll not yet seen to end (one that has ended answers -ENOENT).
      if (remove_refused) {
        for (std::uint64_t token : removing_) remove_locked(token);
      }
      io_uring_submit(&ring_);
    }
    return count;
  }

  void wake() override { wake_.wake(); }

 private:
  io_uring_sqe* sqe_locked() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (!sqe) {  // SQ full: push what is queued and try again
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  void remove_locked(std::uint64_t token) {
    io_uring_sqe* sqe = sqe_locked();
    io_uring_prep_poll_remove(sqe, token);
    io_uring_sqe_set_data64(sqe, kRemoveToken);
  }

  void arm_locked(int fd, std::uint64_t token, unsigned events) {
    io_uring_sqe* sqe = sqe_locked();
    io_uring_prep_poll_multishot(sqe, fd, events);
    io_uring_sqe_set_data64(sqe, token);
  }

  io_uring ring_;
  WakeFd wake_;
  std::atomic<bool> wake_seen_{false};  // by a non-blocking poll, for the next blocking one
  std::mutex sq_mu_;
  std::unordered_map<std::uint64_t, int> fds_;  // under sq_mu_
  // Removed, but their polls not yet seen to end (a last completion without
  // IORING_CQE_F_MORE); under sq_mu_.
  std::unordered_set<std::uint64_t> removing_;
  std::mutex cq_mu_;
};

}  // namespace

std::unique_ptr<Poller> make_io_uring_poller(std::string* why) {
  io_uring ring;
  const int r = io_uring_queue_init(256, &ring, 0);
  if (r < 0) {
    if (why) *why = std::string("io_uring_queue_init: ") + std::strerror(-r);
    return nullptr;
  }
  if (!(ring.features & IORING_FEAT_EXT_ARG) || !(ring.features & IORING_FEAT_NODROP)) {
    io_uring_queue_exit(&ring);
    if (why) *why = "this kernel's io_uring lacks timed waits (IORING_FEAT_EXT_ARG, Linux 5.11+)";
    return nullptr;
  }
  auto poller = std::make_unique<UringPoller>(ring);
  if (poller->wake_fd() < 0) {
    if (why) *why = std::string("eventfd: ") + std::strerror(errno);
    return nullptr;
  }
  return poller;
}

}  // namespace weft::poll
