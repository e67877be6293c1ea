// kqueue backend (FreeBSD's and macOS's kqueue(2); on Linux, libkqueue's
// emulation): EVFILT_READ and EVFILT_WRITE with EV_CLEAR registered once per
// fd in one changelist (edge-triggered, as epoll's EPOLLET), EVFILT_USER
// with NOTE_TRIGGER to wake a blocked wait, and timespec timeouts in
// nanoseconds.
//
// Written to the FreeBSD man page, not to the emulation. Where they differ,
// both are fine here:
// - Read and write are separate filters, so one fd may come back as two
//   events in a batch (as two tokens' worth of readiness): dispatch handles
//   each on its own.
// - An EV_CLEAR write filter may report again after a read event under
//   libkqueue (its epoll registration is shared); a spurious edge costs a
//   retried syscall, never a lost one.
// - EV_EOF on either filter is epoll's hang-up: the direction is ready and
//   its syscall reports what happened; Go's netpoll_kqueue.go treats an
//   event whose flags are exactly EV_ERROR as its setEventErr, and so does
//   this.
// - libkqueue reads SO_ERROR to fill an EV_EOF's fflags, and reading it
//   clears it: a refused connect would find SO_ERROR 0 and wait again for
//   good, and a reset stream read would see EOF. So on Linux the event
//   carries that error (Event::error) to the desc, and the socket paths ask
//   for it where their own report came back empty. FreeBSD's filters read
//   so_error without clearing it, so there the socket still reports it.
#include <errno.h>
#include <sys/event.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "kqueue_backend.h"

#if defined(__linux__)
// libkqueue frees a closed kqueue on its monitoring thread, later, and that
// frees each registration with an epoll_ctl on the user's fd: a socket that
// outlives the runtime (and so its poller) would be touched by that thread
// while its owner closes it. libkqueue exports this call, undeclared, to
// wait for that work; weak, so a libkqueue without it still links.
extern "C" __attribute__((weak)) void libkqueue_drain_pending_close(void);
#endif

namespace weft::poll {
namespace {

// The ident of the wake-up user event; fds are registered under their own
// numbers in other filters, so any value would do.
constexpr uintptr_t kWakeIdent = 0;
constexpr int kMaxBatch = 128;

class KqueuePoller final : public Poller {
 public:
  explicit KqueuePoller(int kq) : kq_(kq) {}
  ~KqueuePoller() override {
    ::close(kq_);
#if defined(__linux__)
    // Done with every fd once this returns (above).
    if (libkqueue_drain_pending_close) libkqueue_drain_pending_close();
#endif
  }

  const char* name() const override {
    return "kqueue";
  }

#if defined(__linux__)
  // libkqueue's emulation may report input and the peer's FIN in one read
  // event without EV_EOF, and then nothing more for the FIN: a reader that
  // emptied the socket and waited first would wait for good (seen in
  // NetDrainedReadTest). FreeBSD's filter sets EV_EOF whenever the socket
  // can receive no more, as the man page says.
  bool reports_every_arrival() const override {
    return false;
  }
#endif

  std::error_code add(int fd, std::uint64_t token) override {
    void* udata = reinterpret_cast<void*>(static_cast<std::uintptr_t>(token));
    if (change(fd, EV_ADD | EV_CLEAR, udata) != 0) {
      const int failed = errno;
      change(fd, EV_DELETE, nullptr);  // not half registered
      return {failed, std::system_category()};
    }
    return {};
  }

  // Both filters are added and deleted together, so a delete that fails
  // found neither (an fd never added, or removed already).
  std::error_code remove(int fd, std::uint64_t) override {
    if (change(fd, EV_DELETE, nullptr) != 0) return {errno, std::system_category()};
    return {};
  }

  int wait(Event* out, int max, std::int64_t timeout_ns) override {
    struct kevent evs[kMaxBatch];
    if (max > kMaxBatch) max = kMaxBatch;
    timespec ts{};
    timespec* timeout = nullptr;
    if (timeout_ns >= 0) {
      ts.tv_sec = static_cast<time_t>(timeout_ns / 1'000'000'000);
      ts.tv_nsec = static_cast<long>(timeout_ns % 1'000'000'000);
      timeout = &ts;
    }
    const int n = kevent(kq_, nullptr, 0, evs, max, timeout);
    if (n < 0) return 0;  // EINTR: the caller recomputes its timeout
    int count = 0;
    for (int i = 0; i < n; ++i) {
      const struct kevent& ev = evs[i];
      if (ev.filter == EVFILT_USER) {
        // Retrieving it reset it (EV_CLEAR). Only a blocking wait consumes
        // the wake-up, as with epoll's eventfd: a busy worker's poll that
        // took it triggers it again for the worker blocked in the poller.
        if (timeout_ns != 0) {
          drain_wake();
        } else {
          trigger_wake();
        }
        continue;
      }
      std::uint32_t ready = ev.filter == EVFILT_WRITE ? kWritable : kReadable;
      if (ev.flags == EV_ERROR) ready |= kError;
      if ((ev.flags & EV_ERROR) || (ev.filter == EVFILT_READ && (ev.flags & EV_EOF))) {
        ready |= kHangup;
      }
      Event& e = out[count++];
      e.token = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(ev.udata));
      e.ready = ready;
      e.error = 0;
#if defined(__linux__)  // libkqueue: the error is the socket's no longer
      if ((ev.flags & EV_EOF) && ev.fflags != 0) e.error = static_cast<std::int32_t>(ev.fflags);
#endif
    }
    return count;
  }

  // One pending wake-up at a time, as Go's netpollBreak (and WakeFd).
  void wake() override {
    if (wake_pending_.exchange(true, std::memory_order_seq_cst)) return;
    trigger_wake();
  }

  bool register_wake() {
    struct kevent ev;
    EV_SET(&ev, kWakeIdent, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, nullptr);
    return kevent(kq_, &ev, 1, nullptr, 0, nullptr) == 0;
  }

 private:
  // Both filters of fd in one changelist. No eventlist: the kernel stops at
  // the first change that fails and kevent() returns -1 with its errno.
  // Both filters are added and deleted together, so the first error is all
  // there is to know, and per-change receipts (EV_RECEIPT, which need an
  // eventlist) would add nothing.
  int change(int fd, unsigned short flags, void* udata) {
    struct kevent changes[2];
    EV_SET(&changes[0], fd, EVFILT_READ, flags, 0, 0, udata);
    EV_SET(&changes[1], fd, EVFILT_WRITE, flags, 0, 0, udata);
    return kevent(kq_, changes, 2, nullptr, 0, nullptr);
  }

  void trigger_wake() {
    struct kevent ev;
    EV_SET(&ev, kWakeIdent, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
    while (kevent(kq_, &ev, 1, nullptr, 0, nullptr) < 0 && errno == EINTR) {
    }
  }

  // Clear, then trigger again if a wake() came meanwhile: WakeFd's drain,
  // for the same reason (a set flag with no trigger pending would swallow
  // every later wake()).
  void drain_wake() {
    wake_pending_.store(false, std::memory_order_seq_cst);
    if (wake_pending_.load(std::memory_order_seq_cst)) trigger_wake();
  }

  const int kq_;
  std::atomic<bool> wake_pending_{false};
};

}  // namespace

std::unique_ptr<Poller> make_kqueue_poller(std::string* why) {
  const int kq = kqueue();
  if (kq < 0) {
    if (why) *why = std::string("kqueue: ") + std::strerror(errno);
    return nullptr;
  }
  auto poller = std::make_unique<KqueuePoller>(kq);
  if (!poller->register_wake()) {
    if (why) *why = std::string("kevent(EVFILT_USER): ") + std::strerror(errno);
    return nullptr;
  }
  return poller;
}

}  // namespace weft::poll
