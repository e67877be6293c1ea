#include "fd.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "chaos.h"
#include "op_binding.h"
#include "weft/detail/coop.h"
#include "weft/detail/saturate.h"

namespace weft::net::detail {

namespace {

std::atomic<std::uint64_t> g_accept_backoffs{0};

struct RwGuard {
  NetFD* fd;
  PollMode mode;
  PollOp* op = nullptr;
  ~RwGuard() { fd->rw_unlock(mode, op); }
};

// The statuses that end an operation before its syscall.
bool fails_early(PollStatus st) noexcept {
  return st == PollStatus::closed || st == PollStatus::timeout || st == PollStatus::canceled;
}

// Out of line, as NetFD::io_failed.
[[gnu::noinline, gnu::cold]] IoResult eof_result() {
  return {0, OpError(weft::errc::eof)};  // bare, as Go's io.EOF
}

}  // namespace

std::uint64_t accept_backoffs() noexcept {
  return g_accept_backoffs.load(std::memory_order_relaxed);
}

std::error_code errno_code(int e) noexcept {
  return {e, std::system_category()};
}

std::error_code status_code(PollStatus st) noexcept {
  switch (st) {
    case PollStatus::closed:
      return weft::errc::closed;
    case PollStatus::timeout:
      return weft::errc::timeout;
    case PollStatus::not_pollable:
      return net_errc::not_pollable;
    case PollStatus::no_runtime:
      return weft::errc::no_runtime;
    case PollStatus::canceled:  // context_io.cc reports the context's error
      return weft::errc::operation_canceled;
    case PollStatus::ready:
      break;
  }
  return {};
}

std::int64_t to_poll_ns(Clock::time_point t) noexcept {
  if (t == Clock::time_point{}) return 0;
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch());
  return std::max<std::int64_t>(ns.count(), 1);  // before the clock's epoch: long expired
}

int new_socket(int family, int sotype, int proto, std::error_code* ec) {
  const int fd = ::socket(family, sotype | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
  if (fd < 0) *ec = errno_code(errno);
  return fd;
}

std::unique_ptr<NetFD> NetFD::open(int sysfd, int family, int sotype, std::string net,
                                   std::error_code* ec) {
  PollDesc* pd = weft::detail::poll_open(sysfd, ec);
  if (!pd) {
    ::close(sysfd);
    return nullptr;
  }
  return std::unique_ptr<NetFD>(new NetFD(sysfd, pd, family, sotype, std::move(net)));
}

NetFD::NetFD(int sysfd, PollDesc* pd, int family, int sotype, std::string net)
    : sysfd_(sysfd), pd_(pd), family_(family), sotype_(sotype), net_(std::move(net)) {}

NetFD::~NetFD() {
  if (!closed()) (void)close();
}

void SocketAddress::set(const sockaddr* sa, socklen_t len, const std::string& network) {
  const bool ip =
      (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) ||
      (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6)));
  if (!ip || len > static_cast<socklen_t>(sizeof raw_)) {  // a Unix name: made now
    set(Addr::from_sockaddr(sa, len, network));
    return;
  }
  std::memcpy(&raw_, sa, static_cast<std::size_t>(len));
  raw_len_ = len;
}

void SocketAddress::set(std::optional<Addr> addr) {
  delete built_.load(std::memory_order_relaxed);
  built_.store(addr ? new Addr(std::move(*addr)) : nullptr, std::memory_order_relaxed);
  raw_len_ = 0;
}

const Addr* SocketAddress::get(const std::string& network) const {
  // acquire: pairs with the release of the compare_exchange below, which
  // published the Addr another thread made.
  const Addr* built = built_.load(std::memory_order_acquire);
  if (built || raw_len_ == 0) return built;
  const Addr* made =
      new Addr(Addr::from_sockaddr(reinterpret_cast<const sockaddr*>(&raw_), raw_len_, network));
  // acq_rel: release publishes `made`; acquire, on failure, takes the one
  // another thread published first (the load above is its partner too).
  if (built_.compare_exchange_strong(built, made, std::memory_order_acq_rel)) return made;
  delete made;
  return built;
}

std::optional<Addr> SocketAddress::copy(const std::string& network) const {
  // acquire: as in get().
  if (const Addr* built = built_.load(std::memory_order_acquire)) return *built;
  if (raw_len_ == 0) return std::nullopt;
  return Addr::from_sockaddr(reinterpret_cast<const sockaddr*>(&raw_), raw_len_, network);
}

void NetFD::fill_laddr() {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(sysfd_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    laddr_.set(reinterpret_cast<sockaddr*>(&ss), len, net_);
  }
}

void NetFD::fill_addrs(std::optional<Addr> raddr) {
  fill_laddr();
  raddr_.set(std::move(raddr));
}

void NetFD::fill_addrs(const sockaddr* sa, socklen_t len) {
  fill_laddr();
  raddr_.set(sa, len, net_);
}

const Addr& NetFD::laddr() const {
  static const Addr none;
  const Addr* a = laddr_.get(net_);
  return a ? *a : none;
}

const Addr& NetFD::raddr() const {
  static const Addr none;
  const Addr* a = raddr_.get(net_);
  return a ? *a : none;
}

IoResult NetFD::io_failed(std::size_t n, const char* op, std::error_code ec,
                          const char* syscall) const {
  return {n, op_error(op, ec, syscall)};
}

OpError NetFD::op_error(const char* op, std::error_code ec, const char* syscall) const {
  OpError e;
  e.op = op;
  e.net = net_;
  if (listener_) {
    e.addr = laddr_.copy(net_);  // Go: accept/close on a listener name only its address
  } else {
    e.source = laddr_.copy(net_);
    e.addr = raddr_.copy(net_);
  }
  e.syscall = syscall;
  e.err = ec;
  return e;
}

bool NetFD::incref() noexcept {
  std::uint64_t s = state_.load(std::memory_order_acquire);
  do {
    if (s & kClosed) return false;
  } while (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel));
  return true;
}

void NetFD::decref() noexcept {
  if (state_.fetch_sub(1, std::memory_order_acq_rel) != (kClosed | 1)) return;
  // The last reference after close(): the closer is waiting for this. Copy
  // the channel handle first; once signalled, *this may be gone.
  weft::Channel<int> done = *close_wait_;
  destroy();
  (void)done.send(1);  // the closer waits on it and never closes it
}

std::error_code NetFD::rw_lock(PollMode mode, const Context* ctx, PollOp** op) {
  // The reference first: without it a close may give the desc back, to be
  // reopened for another socket while we read it.
  if (!incref()) return weft::errc::closed;
  // Before the direction's lock: an operation abandoned with its runtime
  // may hold it forever.
  if (weft::detail::poll_runtime_gone(pd_)) {
    decref();
    return weft::errc::no_runtime;
  }
  (mode == PollMode::read ? rmu_ : wmu_).lock();
  if (closed()) {     // closed while this op queued behind another
    rw_unlock(mode);  // no op begun yet
    return weft::errc::closed;
  }
  if (ctx) {
    *op = bind(mode, *ctx);
    if (*op) weft::detail::poll_op_begin(pd_, mode, *op);
  }
  return {};
}

PollOp* NetFD::bind(PollMode mode, const Context& ctx) {
  std::unique_ptr<OpBinding>& binding = mode == PollMode::read ? read_binding_ : write_binding_;
  if (!binding) binding = std::make_unique<OpBinding>(this, mode);
  return binding->bind(ctx);
}

void NetFD::rw_unlock(PollMode mode, PollOp* op) noexcept {
  if (op) weft::detail::poll_op_end(pd_, mode, op);
  (mode == PollMode::read ? rmu_ : wmu_).unlock();
  decref();
}

void NetFD::destroy() noexcept {
  // Before the desc goes: a bound context's cancel touches it until then.
  read_binding_.reset();
  write_binding_.reset();
  weft::detail::poll_close(pd_);
  ::close(sysfd_);
  sysfd_ = -1;
}

Result<void> NetFD::close() {
  weft::detail::chaos::at(weft::detail::chaos::Point::close);
  std::uint64_t s = state_.load(std::memory_order_acquire);
  do {
    if (s & kClosed) return op_error("close", weft::errc::closed);
  } while (!state_.compare_exchange_weak(s, (s | kClosed) + 1, std::memory_order_acq_rel));
  // Others hold references: the last of them will signal here. Nobody new
  // can take one now, and this call's own reference keeps the count above 0.
  if ((s & kRefMask) != 0) close_wait_.emplace(1);
  weft::detail::poll_unblock(pd_);  // wakes parked ops with `closed`
  if (state_.fetch_sub(1, std::memory_order_acq_rel) == (kClosed | 1)) {
    destroy();
  } else if (weft::detail::poll_runtime_gone(pd_)) {
    // The references left belong to operations abandoned with their
    // runtime (parked when main returned): they never come back to drop
    // them, and nothing runs them again, so the fd is ours to close.
    destroy();
  } else {
    (void)close_wait_->recv();
  }
  if (!unlink_path_.empty()) ::unlink(unlink_path_.c_str());
  return {};
}

Result<void> NetFD::set_deadline(Clock::time_point t, PollMode mode) {
  if (!incref()) return op_error("set", weft::errc::closed);  // before the desc: rw_lock
  // A deadline is a runtime timer.
  if (weft::detail::poll_runtime_gone(pd_)) {
    decref();
    return op_error("set", weft::errc::no_runtime);
  }
  weft::detail::poll_set_deadline(pd_, to_poll_ns(t), mode);
  if (listener_ && mode != PollMode::write) poke_backoff();
  decref();
  return {};
}

Result<void> NetFD::setsockopt_int(int level, int name, int value) {
  if (!incref()) return op_error("set", weft::errc::closed);
  const int r = ::setsockopt(sysfd_, level, name, &value, sizeof value);
  const int e = errno;
  decref();
  if (r < 0) return op_error("set", errno_code(e), "setsockopt");
  return {};
}

Result<void> NetFD::shutdown(int how) {
  if (!incref()) return op_error("close", weft::errc::closed);
  const int r = ::shutdown(sysfd_, how);
  const int e = errno;
  decref();
  if (r < 0) return op_error("close", errno_code(e), "shutdown");
  return {};
}

IoResult NetFD::read(void* buf, std::size_t n, const Context* ctx) {
  weft::detail::coop_spend(weft::detail::kCoopSocketOp);
  PollOp* op = nullptr;
  if (auto e = rw_lock(PollMode::read, ctx, &op)) return io_failed(0, "read", e);
  RwGuard guard{this, PollMode::read, op};
  if (n == 0) return IoResult(0);  // Go: (0, nil) at once, no wait, no EOF
  if (stream() && n > kMaxRW) n = kMaxRW;
  // The last read came back short, so it emptied the socket, and every
  // arrival after it set the slot after that read consumed the slot's
  // readiness (an edge-triggered poller reports each one that finds the
  // queue drained; nginx's recv clears its `ready` on a short read for the
  // same reason): wait for readiness first, and skip the read(2) that would
  // only say EAGAIN, one syscall in three of a request/response server.
  // Not after a hang-up: an end or error that came before that read
  // stays, with no edge to come (poll_read_may_wait_first). poll_wait fails as
  // poll_prepare would for a closed, expired or cancelled read, and
  // returns at once on a latched edge.
  const bool wait_first =
      read_drained_.load(std::memory_order_relaxed) && weft::detail::poll_read_may_wait_first(pd_);
  PollStatus st = PollStatus::ready;
  read_drained_.store(false, std::memory_order_relaxed);
  if (!wait_first) {
    st = weft::detail::poll_prepare(pd_, PollMode::read);
    if (fails_early(st)) return io_failed(0, "read", status_code(st));
  }
  bool after_error_event = false;
  for (bool try_read = !wait_first;; try_read = true) {
    if (try_read) {
      const ssize_t r = ::read(sysfd_, buf, n);
      if (r > 0) {
        if (stream() && static_cast<std::size_t>(r) < n) {
          read_drained_.store(true, std::memory_order_relaxed);
        }
        return IoResult(static_cast<std::size_t>(r));
      }
      if (r == 0) {
        // A reset whose error the poller took off the socket reads as EOF.
        if (const int taken = stream() ? weft::detail::poll_take_error(pd_) : 0) {
          return io_failed(0, "read", errno_code(taken), "read");
        }
        if (zero_read_is_eof()) return eof_result();  // bare, as Go's io.EOF
        return IoResult(0);                           // an empty datagram
      }
      const int e = errno;
      if (e == EINTR) continue;
      if (e != EAGAIN) return io_failed(0, "read", errno_code(e), "read");
      if (const int taken = weft::detail::poll_take_error(pd_)) {  // as for recvfrom below
        return io_failed(0, "read", errno_code(taken), "read");
      }
      if (after_error_event) return io_failed(0, "read", net_errc::not_pollable);
    }
    st = weft::detail::poll_wait(pd_, PollMode::read);
    if (st == PollStatus::ready) continue;
    if (st == PollStatus::not_pollable) {
      after_error_event = true;  // let the syscall report the socket error
      continue;
    }
    return io_failed(0, "read", status_code(st));
  }
}

IoResult NetFD::write(const void* buf, std::size_t n, const Context* ctx) {
  weft::detail::coop_spend(weft::detail::kCoopSocketOp);
  PollOp* op = nullptr;
  if (auto e = rw_lock(PollMode::write, ctx, &op)) return io_failed(0, "write", e);
  RwGuard guard{this, PollMode::write, op};
  PollStatus st = weft::detail::poll_prepare(pd_, PollMode::write);
  if (fails_early(st)) {
    return io_failed(0, "write", status_code(st));
  }
  if (n == 0 && stream()) return IoResult(0);
  const auto* p = static_cast<const char*>(buf);
  std::size_t nn = 0;
  for (;;) {
    const std::size_t chunk = stream() ? std::min(n - nn, kMaxRW) : n;
    // send() with MSG_NOSIGNAL: a write to a reset peer is EPIPE, never SIGPIPE.
    const ssize_t r = ::send(sysfd_, p + nn, chunk, MSG_NOSIGNAL);
    if (r > 0) {
      nn += static_cast<std::size_t>(r);
      if (nn == n || !stream()) return IoResult(nn);
      continue;
    }
    if (r == 0) {
      if (n == 0) return IoResult(0);
      return io_failed(nn, "write", net_errc::unexpected_eof);
    }
    const int e = errno;
    if (e == EINTR) continue;
    if (e != EAGAIN) return io_failed(nn, "write", errno_code(e), "write");
    st = weft::detail::poll_wait(pd_, PollMode::write);
    if (st == PollStatus::ready || st == PollStatus::not_pollable) continue;
    return io_failed(nn, "write", status_code(st));
  }
}

IoResult NetFD::write_buffers(std::span<const std::string_view> buffers, const Context* ctx) {
  if (!stream()) {
    // As Go's Buffers.WriteTo on a conn without writev: one write per
    // buffer, so each stays a datagram of its own.
    std::size_t total = 0;
    for (std::string_view b : buffers) {
      IoResult r = write(b.data(), b.size(), ctx);
      total += r.count();
      if (!r) return {total, r.error()};
    }
    return IoResult(total);
  }
  weft::detail::coop_spend(weft::detail::kCoopSocketOp);
  PollOp* op = nullptr;
  if (auto e = rw_lock(PollMode::write, ctx, &op)) return io_failed(0, "write", e);
  RwGuard guard{this, PollMode::write, op};
  PollStatus st = weft::detail::poll_prepare(pd_, PollMode::write);
  if (fails_early(st)) return io_failed(0, "write", status_code(st));
  constexpr int kMaxIov = 1024;  // Linux's IOV_MAX
  iovec iov[kMaxIov];
  std::size_t total = 0;
  std::size_t index = 0, offset = 0;  // the first unwritten byte: buffers[index][offset]
  for (;;) {
    while (index < buffers.size() && offset == buffers[index].size()) {
      ++index;
      offset = 0;
    }
    if (index == buffers.size()) return IoResult(total);
    int count = 0;
    std::size_t batch = 0;
    for (std::size_t i = index; i < buffers.size() && count < kMaxIov && batch < kMaxRW; ++i) {
      const std::size_t from = i == index ? offset : 0;
      if (buffers[i].size() == from) continue;
      const std::size_t len = std::min(buffers[i].size() - from, kMaxRW - batch);
      iov[count++] = iovec{const_cast<char*>(buffers[i].data() + from), len};
      batch += len;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<std::size_t>(count);
    // sendmsg, not writev: MSG_NOSIGNAL, so a reset peer is EPIPE and
    // never SIGPIPE. Errors say "writev", as Go's do.
    const ssize_t r = ::sendmsg(sysfd_, &msg, MSG_NOSIGNAL);
    if (r > 0) {
      total += static_cast<std::size_t>(r);
      for (std::size_t left = static_cast<std::size_t>(r); left > 0;) {
        const std::size_t here = buffers[index].size() - offset;
        if (left < here) {
          offset += left;
          break;
        }
        left -= here;
        ++index;
        offset = 0;
      }
      continue;
    }
    if (r == 0) return io_failed(total, "write", net_errc::unexpected_eof);
    const int e = errno;
    if (e == EINTR) continue;
    if (e != EAGAIN) return io_failed(total, "write", errno_code(e), "writev");
    st = weft::detail::poll_wait(pd_, PollMode::write);
    if (st == PollStatus::ready || st == PollStatus::not_pollable) continue;
    return io_failed(total, "write", status_code(st));
  }
}

namespace {

// splice(2) into a socket has no MSG_NOSIGNAL: a reset peer would raise
// SIGPIPE, which by default ends the process. So SIGPIPE is blocked in
// this thread for the one syscall, and one it raised is taken back (it is
// sent to the calling thread) before the mask is restored. Unless the
// thread had it blocked already: then a pending one may be the caller's.
ssize_t splice_without_sigpipe(int from, int to, std::size_t n) {
  sigset_t pipe_only, old;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  const ssize_t r = ::splice(from, nullptr, to, nullptr, n, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  const int e = errno;
  if (r < 0 && e == EPIPE && !sigismember(&old, SIGPIPE)) {
    const timespec now{};
    while (sigtimedwait(&pipe_only, nullptr, &now) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = e;
  return r;
}

}  // namespace

IoResult NetFD::splice_to_pipe(int pipe_w, std::size_t max, const Context* ctx) {
  weft::detail::coop_spend(weft::detail::kCoopSocketOp);
  PollOp* op = nullptr;
  if (auto e = rw_lock(PollMode::read, ctx, &op)) return io_failed(0, "read", e);
  RwGuard guard{this, PollMode::read, op};
  PollStatus st = prepare_read();
  if (fails_early(st)) return io_failed(0, "read", status_code(st));
  for (;;) {
    const ssize_t r =
        ::splice(sysfd_, nullptr, pipe_w, nullptr, max, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (r > 0) return IoResult(static_cast<std::size_t>(r));
    if (r == 0) {
      if (const int taken = weft::detail::poll_take_error(pd_)) {  // as read()
        return io_failed(0, "read", errno_code(taken), "splice");
      }
      return eof_result();
    }
    const int e = errno;
    if (e == EINTR) continue;
    if (e != EAGAIN) return io_failed(0, "read", errno_code(e), "splice");
    st = weft::detail::poll_wait(pd_, PollMode::read);
    if (st == PollStatus::ready || st == PollStatus::not_pollable) continue;
    return io_failed(0, "read", status_code(st));
  }
}

IoResult NetFD::splice_from_pipe(int pipe_r, std::size_t n, const Context* ctx) {
  weft::detail::coop_spend(weft::detail::kCoopSocketOp);
  PollOp* op = nullptr;
  if (auto e = rw_lock(PollMode::write, ctx, &op)) return io_failed(0, "write", e);
  RwGuard guard{this, PollMode::write, op};
  PollStatus st = weft::detail::poll_prepare(pd_, PollMode::write);
  if (fails_early(st)) return io_failed(0, "write", status_code(st));
  std::size_t done = 0;
  while (done < n) {
    // The pipe holds all n bytes, so only the socket can say EAGAIN.
    const ssize_t r = splice_without_sigpipe(pipe_r, sysfd_, n - done);
    if (r > 0) {
      done += static_cast<std::size_t>(r);
      continue;
    }
    if (r == 0) return io_failed(done, "write", net_errc::unexpected_eof);
    const int e = errno;
    if (e == EINTR) continue;
    if (e != EAGAIN) return io_failed(done, "write", errno_code(e), "splice");
    st = weft::detail::poll_wait(pd_, PollMode::write);
    if (st == PollStatus::ready || st == PollStatus::not_pollable) continue;
    return io_failed(done, "write", status_code(st));
  }
  return IoResult(done);
}

Result<PacketConn::Datagram> NetFD::read_from(void* buf, std::size_t n) {
  weft::detail::coop_spend(weft::detail::kCoopSocketOp);
  if (auto e = rw_lock(PollMode::read)) return op_error("read", e);
  RwGuard guard{this, PollMode::read};
  PollStatus st = prepare_read();
  if (fails_early(st)) {
    return op_error("read", status_code(st));
  }
  bool after_error_event = false;
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    const ssize_t r = ::recvfrom(sysfd_, buf, n, 0, reinterpret_cast<sockaddr*>(&ss), &len);
    if (r >= 0) {
      PacketConn::Datagram d;
      d.n = static_cast<std::size_t>(r);
      d.from = Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len, net_);
      return d;
    }
    const int e = errno;
    if (e == EINTR) continue;
    if (e != EAGAIN) return op_error("read", errno_code(e), "recvfrom");
    // An ICMP error the poller took off the socket: recvfrom would have
    // reported it once.
    if (const int taken = weft::detail::poll_take_error(pd_)) {
      return op_error("read", errno_code(taken), "recvfrom");
    }
    if (after_error_event) return op_error("read", net_errc::not_pollable);
    st = weft::detail::poll_wait(pd_, PollMode::read);
    if (st == PollStatus::ready) continue;
    if (st == PollStatus::not_pollable) {
      after_error_event = true;
      continue;
    }
    return op_error("read", status_code(st));
  }
}

IoResult NetFD::write_to(const void* buf, std::size_t n, const Addr& to) {
  weft::detail::coop_spend(weft::detail::kCoopSocketOp);
  auto fail = [&](std::error_code ec, const char* syscall = "") {
    OpError e = op_error("write", ec, syscall);
    e.addr = to;  // Go names the destination
    return IoResult(0, std::move(e));
  };
  if (auto e = rw_lock(PollMode::write)) return fail(e);
  RwGuard guard{this, PollMode::write};
  sockaddr_storage ss{};
  std::error_code why;
  const socklen_t len = to.to_sockaddr(&ss, family_, &why);
  if (len == 0) return fail(why);
  PollStatus st = weft::detail::poll_prepare(pd_, PollMode::write);
  if (fails_early(st)) return fail(status_code(st));
  for (;;) {
    const ssize_t r =
        ::sendto(sysfd_, buf, n, MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&ss), len);
    if (r >= 0) return IoResult(static_cast<std::size_t>(r));
    const int e = errno;
    if (e == EINTR) continue;
    if (e != EAGAIN) return fail(errno_code(e), "sendto");
    st = weft::detail::poll_wait(pd_, PollMode::write);
    if (st == PollStatus::ready || st == PollStatus::not_pollable) continue;
    return fail(status_code(st));
  }
}

void NetFD::poke_backoff() {
  if (backoff_.load(std::memory_order_seq_cst)) {
    weft::detail::poll_set_deadline(pd_, weft::detail::kDeadlineLongPast, PollMode::write);
  }
}

PollStatus NetFD::backoff_wait(std::chrono::nanoseconds delay) {
  // A listener never waits to write, so its write side serves as an
  // interruptible sleep: a write deadline `delay` from now, woken early by
  // close (poll_unblock) or by set_deadline (poke_backoff). The order
  // flag, deadline, read check pairs with set_deadline's deadline, flag,
  // poke, so a deadline set meanwhile is never missed.
  backoff_.store(true, std::memory_order_seq_cst);
  weft::detail::poll_set_deadline(pd_, to_poll_ns(weft::detail::add_saturated(Clock::now(), delay)),
                                  PollMode::write);
  PollStatus st = prepare_read();
  if (!fails_early(st)) st = weft::detail::poll_wait(pd_, PollMode::write);
  backoff_.store(false, std::memory_order_seq_cst);
  weft::detail::poll_set_deadline(pd_, 0, PollMode::write);
  if (st == PollStatus::closed) return st;
  st = prepare_read();
  return st == PollStatus::not_pollable ? PollStatus::ready : st;
}

Result<std::unique_ptr<NetFD>> NetFD::accept(const Context* ctx) {
  weft::detail::coop_spend(weft::detail::kCoopSocketOp);
  PollOp* op = nullptr;
  if (auto e = rw_lock(PollMode::read, ctx, &op)) return op_error("accept", e);
  RwGuard guard{this, PollMode::read, op};
  PollStatus st = prepare_read();
  if (fails_early(st)) {
    return op_error("accept", status_code(st));
  }
  std::chrono::nanoseconds delay{0};
  bool after_error_event = false;
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    const int nfd =
        ::accept4(sysfd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (nfd >= 0) {
      std::error_code ec;
      auto conn = NetFD::open(nfd, family_, sotype_, net_, &ec);
      if (!conn) return op_error("accept", ec);
      conn->fill_addrs(reinterpret_cast<sockaddr*>(&ss), len);
      return conn;
    }
    const int e = errno;
    if (e == EINTR || e == ECONNABORTED) continue;  // Go: a reset in the backlog is not news
    if (e == EAGAIN) {
      if (after_error_event) return op_error("accept", net_errc::not_pollable);
      st = weft::detail::poll_wait(pd_, PollMode::read);
      if (st == PollStatus::ready) continue;
      if (st == PollStatus::not_pollable) {
        after_error_event = true;
        continue;
      }
      return op_error("accept", status_code(st));
    }
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
      // Out of descriptors or memory: spinning would burn a CPU and failing
      // would end a server's accept loop; wait, longer each time (Go's
      // http.Server: 5 ms doubling to 1 s), then try again.
      delay = delay.count() == 0
                  ? std::chrono::milliseconds(5)
                  : std::min<std::chrono::nanoseconds>(2 * delay, std::chrono::seconds(1));
      g_accept_backoffs.fetch_add(1, std::memory_order_relaxed);
      st = backoff_wait(delay);
      if (st != PollStatus::ready) return op_error("accept", status_code(st));
      continue;
    }
    return op_error("accept", errno_code(e), "accept4");
  }
}

std::error_code NetFD::wait_connect(std::optional<Clock::time_point> deadline, DialCanceler* cancel,
                                    const char** syscall) {
  *syscall = "";
  if (deadline) weft::detail::poll_set_deadline(pd_, to_poll_ns(*deadline), PollMode::write);
  std::error_code result;
  if (cancel && !cancel->attach(this)) {
    result = cancel->err();
    cancel = nullptr;
  }
  while (!result) {
    const PollStatus st = weft::detail::poll_wait(pd_, PollMode::write);
    if (fails_early(st)) {
      result = status_code(st);
      break;
    }
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (::getsockopt(sysfd_, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0) {
      result = errno_code(errno);
      *syscall = "getsockopt";
      break;
    }
    if (soerr == EINPROGRESS || soerr == EALREADY || soerr == EINTR) continue;
    if (soerr == EISCONN) break;
    // An error the poller took off the socket (libkqueue reads SO_ERROR,
    // which clears it) is the one this getsockopt would have said.
    if (soerr == 0) soerr = weft::detail::poll_take_error(pd_);
    if (soerr == 0) {
      // Writable and no error: confirm, since the poller may wake spuriously
      // (Go issues #14548, #19289).
      sockaddr_storage ss{};
      socklen_t sl = sizeof ss;
      if (::getpeername(sysfd_, reinterpret_cast<sockaddr*>(&ss), &sl) == 0) break;
      continue;
    }
    result = errno_code(soerr);
    *syscall = "connect";
  }
  // Once detached no cancel touches this socket again; a cancel that came
  // while attached wins even over a completed connect (#16523).
  if (cancel) {
    if (std::error_code ce = cancel->detach(this)) {
      result = ce;
      *syscall = "";
    }
  }
  weft::detail::poll_set_deadline(pd_, 0, PollMode::write);  // no leftover deadline (#15078)
  return result;
}

// --- DialCanceler ---

std::shared_ptr<DialCanceler> DialCanceler::child() {
  auto c = make();
  std::lock_guard guard(lock_);
  if (err_) {
    c->err_ = err_;
  } else {
    children_.push_back(c);
  }
  return c;
}

void DialCanceler::cancel(std::error_code err) {
  std::vector<std::shared_ptr<DialCanceler>> children;
  {
    std::lock_guard guard(lock_);
    if (err_) return;
    err_ = err;
    // Under the lock: detach() then knows nothing touches its fd afterwards.
    for (NetFD* fd : fds_) {
      weft::detail::poll_set_deadline(fd->pd(), weft::detail::kDeadlineLongPast, PollMode::write);
    }
    children.swap(children_);
  }
  for (auto& c : children) c->cancel(err);
}

std::error_code DialCanceler::err() const {
  std::lock_guard guard(lock_);
  return err_;
}

bool DialCanceler::attach(NetFD* fd) {
  std::lock_guard guard(lock_);
  if (err_) return false;
  fds_.push_back(fd);
  return true;
}

std::error_code DialCanceler::detach(NetFD* fd) {
  std::lock_guard guard(lock_);
  fds_.erase(std::remove(fds_.begin(), fds_.end(), fd), fds_.end());
  return err_;
}

}  // namespace weft::net::detail
