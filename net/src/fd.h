// NetFD: a non-blocking socket fd with its PollDesc (Go's netFD + poll.FD,
// with fdMutex simplified to a reference count plus one Mutex per direction).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "weft/channel.h"
#include "weft/detail/netpoll.h"
#include "weft/net/conn.h"
#include "weft/sync.h"

namespace weft::net::detail {

class OpBinding;  // op_binding.h

using weft::detail::PollDesc;
using weft::detail::PollMode;
using weft::detail::PollOp;
using weft::detail::PollStatus;

// Go's maxRW: one syscall moves at most 1 GiB (issues #7812, #16266).
inline constexpr std::size_t kMaxRW = std::size_t{1} << 30;

std::error_code errno_code(int e) noexcept;
// errc::closed / errc::timeout / errc::operation_canceled for a PollStatus
// that is not `ready`.
std::error_code status_code(PollStatus st) noexcept;
// steady_clock instant -> the poller's CLOCK_MONOTONIC ns (0 clears).
std::int64_t to_poll_ns(Clock::time_point t) noexcept;

// One of a socket's addresses, kept as the kernel gave it when it is an IP
// one (28 bytes) and made an Addr (136 bytes, with its strings) only when
// first asked for. Most connections of a server never are, and an idle
// connection's bytes are what issue 19 counts: this halved a NetFD.
class SocketAddress {
 public:
  SocketAddress() = default;
  SocketAddress(const SocketAddress&) = delete;
  SocketAddress& operator=(const SocketAddress&) = delete;
  ~SocketAddress() { delete built_.load(std::memory_order_relaxed); }

  // Before the socket is shared (as it is opened).
  void set(const sockaddr* sa, socklen_t len, const std::string& network);
  void set(std::optional<Addr> addr);
  // Null when there is none. `network` names it (the socket's).
  const Addr* get(const std::string& network) const;
  // A copy, for an error that carries it: made from the raw form without
  // keeping it (a cancel that fails 1,000 reads builds 1,000 of these).
  std::optional<Addr> copy(const std::string& network) const;

 private:
  union Raw {
    sockaddr_in in4;
    sockaddr_in6 in6;
  } raw_{};
  socklen_t raw_len_ = 0;  // 0: nothing raw (none, or built at once)
  mutable std::atomic<const Addr*> built_{nullptr};
};

class NetFD {
 public:
  // Takes ownership of `sysfd` (already non-blocking and close-on-exec).
  // Null with `ec` set if the poller refuses it; the fd is closed then.
  static std::unique_ptr<NetFD> open(int sysfd, int family, int sotype, std::string net,
                                     std::error_code* ec);
  NetFD(const NetFD&) = delete;
  NetFD& operator=(const NetFD&) = delete;
  ~NetFD();

  int sysfd() const noexcept { return sysfd_; }
  int family() const noexcept { return family_; }
  int sotype() const noexcept { return sotype_; }
  const std::string& net() const noexcept { return net_; }
  bool stream() const noexcept { return sotype_ == SOCK_STREAM; }
  // Go's ZeroReadIsEOF: a 0-byte read ends a connection unless each read is
  // a datagram (SOCK_SEQPACKET keeps message boundaries but still ends).
  bool zero_read_is_eof() const noexcept { return sotype_ != SOCK_DGRAM && sotype_ != SOCK_RAW; }
  bool closed() const noexcept { return state_.load(std::memory_order_acquire) & kClosed; }

  // Reads the local address from the kernel (getsockname) and keeps the
  // remote one: as the kernel gave it (`sa`, accept), or made (dial).
  void fill_addrs(std::optional<Addr> raddr);
  void fill_addrs(const sockaddr* sa, socklen_t len);
  const Addr& laddr() const;
  const Addr& raddr() const;
  void set_listener(bool v) noexcept { listener_ = v; }
  void set_unlink_on_close(std::string path) { unlink_path_ = std::move(path); }

  // An OpError naming this fd the way Go does for `op`.
  OpError op_error(const char* op, std::error_code ec, const char* syscall = "") const;
  // A failed IoResult with op_error's error, built out of line: an OpError
  // is some 250 bytes, which every read and write frame would otherwise
  // reserve, and a reader parked on an idle connection keeps its frames
  // (a stack given back while idle keeps them aside: idle_stack.h).
  [[gnu::noinline, gnu::cold]] IoResult io_failed(std::size_t n, const char* op, std::error_code ec,
                                                  const char* syscall = "") const;

  // Reference for misc operations (deadlines, setsockopt); false if closed.
  bool incref() noexcept;
  void decref() noexcept;
  // Reference plus the direction's lock; errc::closed if closed, or
  // errc::no_runtime once the runtime it was opened in has ended. With
  // `ctx` (an operation that ctx's cancellation ends), the direction is
  // bound to ctx (OpBinding), and *op is the PollOp the operation runs as,
  // the direction's current op (poll_op_begin) until rw_unlock, or null
  // when ctx can never be done; a plain op passes none and pays nothing.
  std::error_code rw_lock(PollMode mode, const Context* ctx = nullptr, PollOp** op = nullptr);
  // Binds the direction to ctx (OpBinding::bind): the PollOp for an
  // operation to run as, or null when ctx can never be done. Under the
  // direction's lock, or by whoever holds the connection alone
  // (go_when_readable's wait).
  PollOp* bind(PollMode mode, const Context& ctx);
  void rw_unlock(PollMode mode, PollOp* op = nullptr) noexcept;

  Result<void> close();
  Result<void> set_deadline(Clock::time_point t, PollMode mode);
  Result<void> setsockopt_int(int level, int name, int value);
  Result<void> shutdown(int how);

  // `ctx`: set for an operation that ctx's cancellation ends
  // (context_io.cc); such an op fails with errc::operation_canceled once
  // it does.
  IoResult read(void* buf, std::size_t n, const Context* ctx = nullptr);
  // poll_prepare for the read side, for every reader but read(): a wait or
  // syscall of theirs may consume the edge that read() counts on after a
  // short read, so the next read() makes its syscall first again.
  PollStatus prepare_read() noexcept {
    read_drained_.store(false, std::memory_order_relaxed);
    return weft::detail::poll_prepare(pd_, PollMode::read);
  }
  IoResult write(const void* buf, std::size_t n, const Context* ctx = nullptr);
  IoResult write_buffers(std::span<const std::string_view> buffers, const Context* ctx = nullptr);
  // io::copy's halves (splice(2), no copy through user memory): moves up
  // to `max` bytes from this socket into the pipe (errc::eof at the end),
  // and exactly `n` bytes from the pipe into this socket.
  IoResult splice_to_pipe(int pipe_w, std::size_t max, const Context* ctx = nullptr);
  IoResult splice_from_pipe(int pipe_r, std::size_t n, const Context* ctx = nullptr);
  Result<PacketConn::Datagram> read_from(void* buf, std::size_t n);
  IoResult write_to(const void* buf, std::size_t n, const Addr& to);
  Result<std::unique_ptr<NetFD>> accept(const Context* ctx = nullptr);
  // Wakes an accept backing off after EMFILE, so it re-checks its deadline.
  void poke_backoff();

  // After a non-blocking connect() said EINPROGRESS: parks as a writer until
  // the connect completes, `deadline` (the write deadline meanwhile) passes,
  // or `cancel` fires; checks SO_ERROR plus getpeername. Clears the write
  // deadline again. Sets `*syscall` to the call that failed.
  std::error_code wait_connect(std::optional<Clock::time_point> deadline, DialCanceler* cancel,
                               const char** syscall);

  PollDesc* pd() const noexcept { return pd_; }
  // For tests: whether an operation waits for the direction's lock.
  bool queued_on_lock(PollMode mode) const noexcept {
    return weft::detail::mutex_has_waiters(mode == PollMode::read ? rmu_ : wmu_);
  }

  // A listener's keep-alive setting for the connections it accepts
  // (0 Go's default, < 0 off).
  std::chrono::nanoseconds accept_keep_alive{0};

 private:
  NetFD(int sysfd, PollDesc* pd, int family, int sotype, std::string net);
  // Sleeps up to `delay` during an accept backoff; false if the listener
  // closed meanwhile.
  PollStatus backoff_wait(std::chrono::nanoseconds delay);
  void fill_laddr();        // from the kernel (getsockname)
  void destroy() noexcept;  // poll_close + close(2); at the last reference

  static constexpr std::uint64_t kClosed = std::uint64_t{1} << 63;
  static constexpr std::uint64_t kRefMask = kClosed - 1;

  int sysfd_;
  PollDesc* pd_;
  int family_;
  int sotype_;
  std::string net_;
  SocketAddress laddr_, raddr_;
  bool listener_ = false;
  std::string unlink_path_;
  std::atomic<std::uint64_t> state_{0};
  weft::Mutex rmu_, wmu_;
  // Set by close() when others still hold references; the last one signals.
  std::optional<weft::Channel<int>> close_wait_;
  std::atomic<bool> backoff_{false};
  // A stream read() came back short: the socket was empty then, so the next
  // read() waits for readiness before its syscall. One reader at a time
  // (rmu_, or a go_when_readable wait that holds the connection); atomic
  // only so that misuse is not undefined.
  std::atomic<bool> read_drained_{false};
  // Each direction's link to the context its context-bound operations run
  // under, made by the first of them and kept (op_binding.h). Under the
  // direction's lock (rmu_, wmu_), until destroy() lets them go.
  std::unique_ptr<OpBinding> read_binding_, write_binding_;
};

// Every connection holds one, idle or not (issue 19's bytes per idle
// connection): grow it only knowingly.
static_assert(sizeof(NetFD) <= 288, "a NetFD grew: see SocketAddress");

// The error of an operation on a moved-from socket object.
inline OpError no_socket(const char* op) {
  OpError e;
  e.op = op;
  e.err = weft::errc::closed;
  return e;
}

// TCP defaults of a fresh connection: no Nagle, keep-alive per `period`
// (conn.cc).
void setup_tcp_conn(NetFD& fd, std::chrono::nanoseconds keep_alive);

// Creates a non-blocking, close-on-exec socket. -1 with `ec` set on error.
int new_socket(int family, int sotype, int proto, std::error_code* ec);

}  // namespace weft::net::detail

namespace weft::net {

// Builds the public socket types around a NetFD (their constructors are
// private to everyone else).
struct SocketAccess {
  template <class T>
  static T make(std::unique_ptr<detail::NetFD> fd) {
    return T(std::move(fd));
  }
  static detail::NetFD* fd(const Socket& s) noexcept { return s.fd_.get(); }
};

}  // namespace weft::net
