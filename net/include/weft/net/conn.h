// Sockets on the netpoller: stream connections (TCP, Unix), listeners,
// datagram sockets (UDP, unixgram), dial with Go's Dialer rules (timeouts,
// several addresses, Happy Eyeballs) and listen with Go's ListenConfig.
//
// Every socket is non-blocking and registered with the poller once. An
// operation tries its syscall first and parks its fiber only on EAGAIN.
// Deadlines are absolute steady_clock instants per direction; they apply to
// operations already parked; a default time_point clears one. Errors are
// OpErrors with Go's texts; EOF is returned bare (weft::errc::eof).
//
// A socket object may be used from several fibers at once (one reads while
// another writes and a third closes); at most one reader and one writer are
// in the poller, others queue. close() wakes everyone parked with `closed`
// and returns once the descriptor is really closed. Destroying a socket
// closes it.
//
// Sockets live on the running runtime's poller: listen, dial and adopt
// called where no runtime runs (outside weft::run) fail, before making a
// socket, with weft::errc::no_runtime ("no weft runtime is running (call
// inside weft::run)").
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "weft/context.h"
#include "weft/detail/netpoll.h"
#include "weft/detail/spinlock.h"
#include "weft/net/addr.h"
#include "weft/net/resolve.h"
#include "weft/net/result.h"
#include "weft/runtime.h"

namespace weft::net {

using Clock = std::chrono::steady_clock;

namespace detail {
class NetFD;
class DialCanceler;
}  // namespace detail

// Go's KeepAliveConfig; the defaults are Go's (15 s idle, 15 s interval, 9).
struct KeepAliveConfig {
  bool enable = true;
  std::chrono::seconds idle{15};
  std::chrono::seconds interval{15};
  int count = 9;
};

// What every socket has: close, deadlines, its local address, the raw fd.
class Socket {
 public:
  Socket() noexcept;
  Socket(Socket&&) noexcept;
  Socket& operator=(Socket&&) noexcept;
  ~Socket();

  // True until moved from (a closed socket is still valid; its ops fail).
  bool valid() const noexcept { return fd_ != nullptr; }
  // The first close returns success; later ones OpError{close, closed}.
  Result<void> close();

  // Both directions; Go's SetDeadline. A default time_point clears, a time
  // not in the future expires at once (waking a parked operation).
  Result<void> set_deadline(Clock::time_point t);
  Result<void> set_read_deadline(Clock::time_point t);
  Result<void> set_write_deadline(Clock::time_point t);
  // Wall-clock instants are converted to steady_clock once, here (D-9).
  Result<void> set_deadline(std::chrono::system_clock::time_point t);
  Result<void> set_read_deadline(std::chrono::system_clock::time_point t);
  Result<void> set_write_deadline(std::chrono::system_clock::time_point t);

  const Addr& local_addr() const;
  // The OS descriptor (-1 after close). Owned by the socket: don't close it.
  int native_handle() const noexcept;
  // SO_RCVBUF / SO_SNDBUF.
  Result<void> set_read_buffer(int bytes);
  Result<void> set_write_buffer(int bytes);

 protected:
  explicit Socket(std::unique_ptr<detail::NetFD> fd) noexcept;
  std::unique_ptr<detail::NetFD> fd_;
  friend struct SocketAccess;
};

// A connection: TCP or Unix stream, or a connected datagram socket (a dial
// of "udp" or "unixgram"; each read is one datagram, and 0 bytes is not EOF).
class Conn : public Socket {
 public:
  Conn() noexcept = default;

  // Waits until some data is available and returns it (1..n bytes). n == 0
  // returns 0 at once. The peer's orderly close: bare errc::eof, again on
  // every later read.
  IoResult read(void* buf, std::size_t n);
  IoResult read(std::span<std::byte> buf) { return read(buf.data(), buf.size()); }
  // With a context: its cancellation (or deadline) ends a parked read at once
  // with the context's error, and no other operation: the read deadline is
  // untouched and the connection stays usable. A context already done fails
  // before the syscall. The connection keeps the context its reads were
  // last bound to (linked once, not per read) until its reads name another
  // one or it is closed; writes likewise.
  IoResult read(const Context& ctx, void* buf, std::size_t n);
  // Reads exactly n bytes: EOF before any byte is errc::eof, after some is
  // net_errc::unexpected_eof ("unexpected EOF", Go's io.ReadFull).
  IoResult read_full(void* buf, std::size_t n);
  IoResult read_full(const Context& ctx, void* buf, std::size_t n);
  // Writes all n bytes, or returns the count written with the error.
  IoResult write(const void* buf, std::size_t n);
  IoResult write(std::string_view s) { return write(s.data(), s.size()); }
  IoResult write(std::span<const std::byte> buf) { return write(buf.data(), buf.size()); }
  // With a context, as read(ctx, ...): a cancel ends a blocked write, which
  // reports what it wrote with the context's error.
  IoResult write(const Context& ctx, const void* buf, std::size_t n);
  IoResult write(const Context& ctx, std::string_view s) { return write(ctx, s.data(), s.size()); }
  // Go's net.Buffers.WriteTo: writes every buffer, in order, through
  // writev (one syscall while the socket takes it all, IOV_MAX buffers at
  // a time), or returns the total written with the error. On a datagram
  // socket each buffer is a datagram of its own, as in Go.
  IoResult write_buffers(std::span<const std::string_view> buffers);
  IoResult write_buffers(std::initializer_list<std::string_view> buffers) {
    return write_buffers(std::span<const std::string_view>(buffers.begin(), buffers.size()));
  }
  IoResult write_buffers(const Context& ctx, std::span<const std::string_view> buffers);

  // Half-close: shutdown(SHUT_RD) / shutdown(SHUT_WR).
  Result<void> close_read();
  Result<void> close_write();

  const Addr& remote_addr() const;

  // TCP options (Go's TCPConn). TCP_NODELAY is on by default.
  Result<void> set_no_delay(bool on);
  Result<void> set_keep_alive(bool on);
  Result<void> set_keep_alive_config(const KeepAliveConfig& config);
  // SO_LINGER: <0 the OS default (graceful), 0 discard and reset on close,
  // >0 seconds to linger.
  Result<void> set_linger(int seconds);

 private:
  using Socket::Socket;
  friend struct SocketAccess;
};

// A datagram socket not tied to one peer (listen_packet of "udp",
// "unixgram"). Each read_from returns one datagram; a datagram longer than
// the buffer is truncated.
class PacketConn : public Socket {
 public:
  PacketConn() noexcept = default;

  struct Datagram {
    std::size_t n = 0;
    Addr from;
  };
  Result<Datagram> read_from(void* buf, std::size_t n);
  IoResult write_to(const void* buf, std::size_t n, const Addr& to);
  IoResult write_to(std::string_view s, const Addr& to) { return write_to(s.data(), s.size(), to); }

 private:
  using Socket::Socket;
  friend struct SocketAccess;
};

class Listener : public Socket {
 public:
  Listener() noexcept = default;

  // Waits for a connection. EINTR and ECONNABORTED are retried; on EMFILE,
  // ENFILE, ENOBUFS, ENOMEM it backs off (5 ms doubling to 1 s, as Go's
  // http.Server) and retries, still ending at once on close or a deadline.
  Result<Conn> accept();
  // Ends with the context's error once it is done (the listener stays open).
  Result<Conn> accept(const Context& ctx);
  // Go's Addr().
  const Addr& addr() const { return local_addr(); }

 private:
  using Socket::Socket;
  friend struct SocketAccess;
};

// Go's ListenConfig.
struct ListenConfig {
  int backlog = -1;           // -1: SOMAXCONN (the kernel clamps to net.core.somaxconn)
  bool reuse_address = true;  // SO_REUSEADDR on TCP listeners, as Go
  bool reuse_port = false;    // SO_REUSEPORT
  // For accepted TCP connections: 0 Go's default (15 s), < 0 off.
  std::chrono::nanoseconds keep_alive{0};
  // Resolves a host name in `address` (see Resolver); null: the default
  // resolver. (Go's ListenConfig always uses its DefaultResolver.)
  std::shared_ptr<const Resolver> resolver;

  // tcp, tcp4, tcp6, unix, unixpacket. "tcp" with an empty host listens on
  // both families ([::] with IPV6_V6ONLY off) when the host has IPv6.
  // A Unix socket file is removed again by close(). A name listens on its
  // first IPv4 address, else its first address, as Go.
  Result<Listener> listen(std::string_view network, std::string_view address) const;
  // Go's ListenConfig.Listen: ctx bounds the name's resolution only. A
  // lookup it cancels, or one begun with ctx already done, fails before any
  // socket exists with Go's text, "listen tcp: lookup HOST: operation was
  // canceled" ("... i/o timeout" for a deadline). A numeric or empty host
  // and a Unix address need no lookup, so ctx does not affect them, done or
  // not (Go: L-2). ctx does not bound the listener's lifetime.
  Result<Listener> listen(const Context& ctx, std::string_view network,
                          std::string_view address) const;
  // udp, udp4, udp6, unixgram.
  Result<PacketConn> listen_packet(std::string_view network, std::string_view address) const;
  // Go's ListenConfig.ListenPacket: ctx bounds the resolution, as listen(ctx, ...).
  Result<PacketConn> listen_packet(const Context& ctx, std::string_view network,
                                   std::string_view address) const;
};

Result<Listener> listen(std::string_view network, std::string_view address);
Result<PacketConn> listen_packet(std::string_view network, std::string_view address);

// Go's Dialer.
struct Dialer {
  // Bounds the whole dial, resolution included; 0 none; negative: expired.
  std::chrono::nanoseconds timeout{0};
  // An absolute bound; a default time_point is none. The earlier one wins.
  Clock::time_point deadline{};
  // Bind to this local address first (port 0: the kernel picks).
  std::optional<Addr> local_addr;
  // TCP keep-alive period: 0 Go's default (15 s), < 0 off.
  std::chrono::nanoseconds keep_alive{0};
  // Happy Eyeballs ("tcp" only): how long the first family gets before the
  // other one is tried too; 0 the default (300 ms), < 0 no racing.
  std::chrono::nanoseconds fallback_delay{0};
  // Resolves a host name in `address` (Go's Dialer.Resolver; see Resolver);
  // null: the default resolver. Its answer takes the same path as the
  // default's (family filter, Happy Eyeballs, serial dial).
  std::shared_ptr<const Resolver> resolver;

  // tcp, tcp4, tcp6, udp, udp4, udp6, unix, unixgram, unixpacket.
  Result<Conn> dial(std::string_view network, std::string_view address) const;
  // Go's DialContext: the earliest of timeout, deadline and ctx's deadline
  // bounds the dial; a context already done fails before any socket exists;
  // a cancel interrupts a connect in progress ("operation was canceled").
  Result<Conn> dial(const Context& ctx, std::string_view network, std::string_view address) const;
  // Dials addresses already resolved, in order (Happy Eyeballs for "tcp"
  // when both families are present; the first address picks the primary).
  Result<Conn> dial_addrs(std::string_view network, std::vector<Addr> addrs) const;
  // The same bound to ctx, with dial(ctx, ...)'s rules: the earliest of
  // timeout, deadline and ctx's deadline bounds it; a context already done
  // fails before any socket exists, naming the first address ("dial tcp
  // 127.0.0.1:80: operation was canceled"); a cancel interrupts a connect in
  // progress.
  Result<Conn> dial_addrs(const Context& ctx, std::string_view network,
                          std::vector<Addr> addrs) const;

  // The effective deadline: the earlier of now + timeout and `deadline`,
  // or nullopt for none.
  std::optional<Clock::time_point> effective_deadline(Clock::time_point now) const;

  // --- The machinery under dial(ctx, ...) (net/src/context_io.cc). ---
  // Dial with an explicit overall deadline (nullopt: none) and a canceler
  // (may be null): the canceler's cancel() interrupts a connect in progress
  // through an expired write deadline; dial(ctx, ...) cancels it from a
  // DoneHook on ctx.
  // `ctx` bounds the name lookup (a lookup cannot be interrupted otherwise),
  // which goes through `resolver` when it is set.
  Result<Conn> dial_impl(std::string_view network, std::string_view address,
                         std::optional<Clock::time_point> deadline,
                         const std::shared_ptr<detail::DialCanceler>& cancel,
                         const Context& ctx = weft::background()) const;
  Result<Conn> dial_addrs_impl(std::string_view network, std::vector<Addr> addrs,
                               std::optional<Clock::time_point> deadline,
                               const std::shared_ptr<detail::DialCanceler>& cancel) const;
};

Result<Conn> dial(std::string_view network, std::string_view address);
Result<Conn> dial(const Context& ctx, std::string_view network, std::string_view address);
Result<Conn> dial_timeout(std::string_view network, std::string_view address,
                          std::chrono::nanoseconds timeout);

// Takes ownership of an open socket fd (made non-blocking and close-on-exec
// here) and registers it with the poller. `network` names it in errors.
// On failure the fd is closed.
Result<Conn> adopt_conn(int fd, std::string_view network);
Result<Listener> adopt_listener(int fd, std::string_view network);
Result<PacketConn> adopt_packet_conn(int fd, std::string_view network);

namespace detail {

// go_when_readable's wait, kept in the waiting fiber's closure: the
// connection, and the PollOp it waits as, of the read direction's binding
// to ctx (the one its reads bound to ctx use; context_io.cc).
class ReadableWait {
 public:
  ReadableWait() noexcept = default;
  ReadableWait(const ReadableWait&) = delete;
  ReadableWait& operator=(const ReadableWait&) = delete;
  ~ReadableWait() { end(); }

  // Starts `f` (whose closure holds this and `conn`) parked until conn is
  // readable, or runs it at once when there is nothing to wait for.
  std::uint64_t start(Conn& conn, const Context& ctx, weft::detail::Fiber* f,
                      const weft::detail::Closure* vtable);
  // The fiber's first step: ctx reaches the wait no more (a cancel running
  // now is waited out), and the read direction is free for its reads.
  void end() noexcept;

 private:
  static bool commit(weft::detail::Fiber* f, void* self);
  NetFD* fd_ = nullptr;                 // set while the wait is the read side's op
  weft::detail::PollOp* op_ = nullptr;  // null: ctx can never be done
};

}  // namespace detail

// Runs fn(std::move(conn)) in a new fiber once conn has input to read (or
// its end, or an error), its read deadline has passed, ctx is done, or it
// was closed; at once if one of those holds already. Until then the wait
// holds no fiber stack: an idle connection costs the fiber's record, `fn`
// and the socket (about 1 KB), where a fiber parked in read() also keeps
// its stack's top page (4 KB). For servers with many idle connections: a
// handler serves what came, then hands the connection to go_when_readable
// again and returns, and its stack goes back at once. The fiber is spawned
// as go() spawns one (`opts`, the call's site), and reads as parked in
// read in dumps and metrics while it waits. fn sees ctx only through what
// it captures: a cancel ends the wait, and fn's own reads then report it.
template <class F>
std::uint64_t go_when_readable(Conn conn, const Context& ctx, F&& fn, const SpawnOptions& opts = {},
                               weft::detail::SpawnSite site = weft::detail::SpawnSite::here()) {
  struct Waiting {
    Conn conn;
    std::decay_t<F> fn;
    detail::ReadableWait wait;
    void operator()() {
      wait.end();
      std::invoke(fn, std::move(conn));
    }
  };
  static constexpr weft::detail::Closure vtable{
      [](void* p) { (*static_cast<Waiting*>(p))(); },
      [](void* p) { static_cast<Waiting*>(p)->~Waiting(); },
  };
  void* storage = nullptr;
  weft::detail::Fiber* f =
      weft::detail::new_fiber(sizeof(Waiting), alignof(Waiting), opts, site, &storage);
  Waiting* waiting = nullptr;
  try {
    waiting = ::new (storage) Waiting{std::move(conn), std::forward<F>(fn), {}};
  } catch (...) {
    weft::detail::free_unstarted_fiber(f);
    throw;
  }
  return waiting->wait.start(waiting->conn, ctx, f, &vtable);
}

namespace detail {

// Test hook: how many times accept() has backed off after EMFILE & co.
std::uint64_t accept_backoffs() noexcept;

// Interrupts dials in progress: cancel(err) makes every connect registered
// here (or with a child) fail at once with `err`, by setting an expired write
// deadline on the connecting socket (a connect parks as a writer), and makes
// every later dial step fail before creating a socket. Registration is under
// a lock, and a connect reads "was I canceled" when it unregisters, so once
// dial_impl returns nothing touches its socket again and a cancel that raced
// a successful connect turns it into a failure (the socket is closed; Go
// issue #16523) -- the caller never has to join the canceling fiber. The
// connect's write deadline is cleared after success (#15078).
class DialCanceler {
 public:
  static std::shared_ptr<DialCanceler> make() { return std::make_shared<DialCanceler>(); }
  // A canceler canceled with this one (Happy Eyeballs' racers).
  std::shared_ptr<DialCanceler> child();
  // First error wins; idempotent; never waits.
  void cancel(std::error_code err);
  // Empty until canceled.
  std::error_code err() const;

  // For the connect path: false if already canceled (see err()).
  bool attach(NetFD* fd);
  // The cancel error if one came while attached (or before), else empty.
  std::error_code detach(NetFD* fd);

 private:
  mutable weft::detail::SpinLock lock_;
  std::error_code err_;                                  // under lock_
  std::vector<NetFD*> fds_;                              // under lock_
  std::vector<std::shared_ptr<DialCanceler>> children_;  // under lock_
};

}  // namespace detail

}  // namespace weft::net
