// The netpoller interface. A backend reports readiness of registered fds as
// opaque tokens; it knows nothing of fibers (the runtime turns tokens into
// fibers to wake). Registration is once per fd, edge-triggered, for both
// directions, as Go does: no syscall per operation.
#pragma once

#include "weft/detail/cxx20.h"

#include <cstdint>
#include <memory>
#include <string>
#include <system_error>

namespace weft::poll {

enum Ready : std::uint32_t {
  kReadable = 1,
  kWritable = 2,
  kError = 4,  // an error condition alone (EPOLLERR without data): readers see it
  // The peer's end or an error (EPOLLRDHUP, EPOLLHUP, EPOLLERR; kqueue's
  // EV_EOF): input that stays, which no later edge will announce again.
  kHangup = 8,
};

struct Event {
  std::uint64_t token;     // what add() was given
  std::uint32_t ready;     // Ready bits
  std::int32_t error = 0;  // a socket error the backend took off the socket
                           // while reporting this event (errno), which the
                           // socket's own syscalls will no longer report; 0
                           // when none (every backend but libkqueue's)
};

class Poller {
 public:
  virtual ~Poller() = default;
  virtual const char* name() const = 0;

  // Watches fd for readability and writability from now until remove().
  virtual std::error_code add(int fd, std::uint64_t token) = 0;
  // Stops watching (token as given to add); call before close(fd). Events
  // already on their way may still be reported: tokens must be able to tell
  // (PollDesc tags them with a generation).
  virtual std::error_code remove(int fd, std::uint64_t token) = 0;

  // Waits for readiness: timeout_ns < 0 blocks, 0 polls, > 0 waits at most
  // that long, with nanosecond resolution. Fills up to max events and
  // returns how many: 0 on timeout, wake(), or a signal (which may end the
  // wait early: callers recompute their deadline and wait again).
  virtual int wait(Event* out, int max, std::int64_t timeout_ns) = 0;

  // Makes a blocked wait() return soon; callable from any thread, cheap when
  // a wake-up is already pending.
  virtual void wake() = 0;

  // Whether, once a read has emptied a stream socket, every later arrival
  // (input, the peer's end, an error) is reported as a new readable event,
  // and an end or error that came before it carries kHangup. Then a reader
  // may wait for readiness before its next syscall (NetFD::read).
  virtual bool reports_every_arrival() const { return true; }
};

// Backends built into this library, best first.
const char* const* available_backends();

// Creates the backend `name` ("epoll", "io_uring", "kqueue"), or the best
// available for an empty name. Null with `why` set when it cannot.
std::unique_ptr<Poller> make_poller(const std::string& name, std::string* why);

}  // namespace weft::poll
