// dial: Go's Dialer rules (DL-1 .. DL-7): effective deadline, serial dial
// over the resolved addresses with partial deadlines, Happy Eyeballs for
// "tcp", non-blocking connect parked as a writer.
//
// Contexts (net/src/context_io.cc) reach this file in two ways only:
//  - Dialer::dial(const Context& ctx, ...) and dial_addrs(ctx, ...) map
//    ctx's error (Go's mapErr), fold ctx.deadline() into the deadline given
//    to dial_impl / dial_addrs_impl, and bridge ctx's cancellation into a
//    DialCanceler through a DoneHook (one helper, bound_dial); dial passes
//    ctx on to bound the name lookup.
//  - Nothing below knows about contexts: every step checks the canceler
//    before creating a socket, and a connect in progress is interrupted
//    through the canceler (an expired write deadline).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "fd.h"
#include "net_internal.h"
#include "weft/channel.h"
#include "weft/detail/saturate.h"
#include "weft/net/resolve.h"
#include "weft/runtime.h"
#include "weft/time.h"

namespace weft::net {

using detail::DialCanceler;
using detail::errno_code;
using detail::NetFD;
using detail::NetworkInfo;

namespace detail {
void setup_tcp_conn(NetFD& fd, std::chrono::nanoseconds keep_alive);  // conn.cc
}  // namespace detail

namespace {

// Go's partialDeadline floor: each address gets at least this much, if the
// overall deadline allows.
constexpr std::chrono::seconds kMinPerAddress{2};
constexpr std::chrono::milliseconds kDefaultFallbackDelay{300};

OpError dial_error(const Dialer& d, const NetworkInfo& n, const std::optional<Addr>& ra,
                   std::error_code ec, const char* syscall = "") {
  OpError e(ec);
  e.op = "dial";
  e.net = n.name;
  e.source = d.local_addr;
  e.addr = ra;
  e.syscall = syscall;
  return e;
}

OpError wrap_dial(const NetworkInfo& n, OpError cause) {
  cause.op = "dial";
  cause.net = n.name;
  return cause;
}

int family_for(const NetworkInfo& n, const Addr& ra) {
  if (n.family == AF_UNIX) return AF_UNIX;
  if (ra.ip().valid()) return ra.ip().is_v4() ? AF_INET : AF_INET6;
  // No host: the local system, over the family the network allows.
  if (n.family == AF_INET6 || (n.family == AF_UNSPEC && detail::ipv6_supported())) {
    return AF_INET6;
  }
  return AF_INET;
}

// One address: socket, optional bind, connect, wait.
Result<Conn> dial_single(const Dialer& d, const NetworkInfo& n, const Addr& ra,
                         std::optional<Clock::time_point> deadline, DialCanceler* cancel) {
  const int family = family_for(n, ra);
  // Both addresses in the kernel's form before any socket exists: a zone
  // that names no interface fails here.
  std::error_code why;
  sockaddr_storage rss{}, lss{};
  const socklen_t rlen = ra.to_sockaddr(&rss, family, &why);
  if (rlen == 0) return dial_error(d, n, ra, why);
  const socklen_t llen = d.local_addr ? d.local_addr->to_sockaddr(&lss, family, &why) : 0;
  if (d.local_addr && llen == 0) return dial_error(d, n, ra, why);
  for (int attempt = 0;; ++attempt) {
    if (cancel) {
      if (std::error_code ce = cancel->err()) return dial_error(d, n, ra, ce);  // no socket
    }
    std::error_code ec;
    const int s = detail::new_socket(family, n.sotype, 0, &ec);
    if (s < 0) return dial_error(d, n, ra, ec, "socket");
    if (family != AF_UNIX && n.sotype == SOCK_DGRAM) {
      int one = 1;
      ::setsockopt(s, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
    }
    if (d.local_addr && ::bind(s, reinterpret_cast<sockaddr*>(&lss), llen) < 0) {
      const int e = errno;
      ::close(s);
      return dial_error(d, n, ra, errno_code(e), "bind");
    }
    int e = 0;
    if (::connect(s, reinterpret_cast<sockaddr*>(&rss), rlen) < 0) e = errno;
    const bool in_progress = e == EINPROGRESS || e == EALREADY || e == EINTR;
    if (e != 0 && e != EISCONN && !in_progress) {
      ::close(s);
      return dial_error(d, n, ra, errno_code(e), "connect");
    }
    // Registered after connect() started, as Go: an unconnected socket
    // would report itself writable (and hung up) at once.
    auto fd = NetFD::open(s, family, n.sotype, n.name, &ec);
    if (!fd) return dial_error(d, n, ra, ec);
    if (in_progress) {
      const char* syscall = "";
      if (std::error_code ce = fd->wait_connect(deadline, cancel, &syscall)) {
        (void)fd->close();
        return dial_error(d, n, ra, ce, syscall);
      }
    } else if (cancel) {
      // Connected at once: a cancel that already came still wins (DL-6).
      if (std::error_code ce = cancel->err()) {
        (void)fd->close();
        return dial_error(d, n, ra, ce);
      }
    }
    std::optional<Addr> peer = ra;
    sockaddr_storage pss{};
    socklen_t plen = sizeof pss;
    if (::getpeername(fd->sysfd(), reinterpret_cast<sockaddr*>(&pss), &plen) == 0 &&
        family != AF_UNIX) {
      peer = Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&pss), plen, n.name);
    }
    fd->fill_addrs(std::move(peer));
    // A TCP connect to our own ephemeral port can "succeed" with nobody
    // listening (simultaneous open, Go issue #2690): retry twice.
    if (n.sotype == SOCK_STREAM && family != AF_UNIX && !d.local_addr && attempt < 2 &&
        fd->laddr().ip() == fd->raddr().ip() && fd->laddr().port() == fd->raddr().port()) {
      (void)fd->close();
      continue;
    }
    detail::setup_tcp_conn(*fd, d.keep_alive);
    return SocketAccess::make<Conn>(std::move(fd));
  }
}

// Each address in turn; the first error is the one returned (DL-5).
Result<Conn> dial_serial(const Dialer& d, const NetworkInfo& n, const std::vector<Addr>& addrs,
                         std::optional<Clock::time_point> deadline, DialCanceler* cancel) {
  std::optional<OpError> first_err;
  for (std::size_t i = 0; i < addrs.size(); ++i) {
    if (cancel) {
      if (std::error_code ce = cancel->err()) return dial_error(d, n, addrs[i], ce);
    }
    std::optional<Clock::time_point> per = deadline;
    if (deadline) {
      const auto now = Clock::now();
      // Saturating: Dialer::deadline may be time_point::min().
      const auto remaining =
          weft::detail::add_saturated(deadline->time_since_epoch(), -now.time_since_epoch());
      if (remaining <= Clock::duration::zero()) {
        if (!first_err) first_err = dial_error(d, n, addrs[i], weft::errc::timeout);
        break;
      }
      auto slice = remaining / static_cast<long>(addrs.size() - i);
      if (slice < kMinPerAddress) {
        slice = std::min<Clock::duration>(remaining, kMinPerAddress);
      }
      per = now + slice;
    }
    auto r = dial_single(d, n, addrs[i], per, cancel);
    if (r) return r;
    if (!first_err) first_err = std::move(r).error();
  }
  if (first_err) return *std::move(first_err);
  return wrap_dial(n, OpError(weft::errc::missing_address));
}

// Happy Eyeballs (RFC 6555, Go's dialParallel, DL-4).
Result<Conn> dial_parallel(const Dialer& d, const NetworkInfo& n,
                           const std::vector<Addr>& primaries, const std::vector<Addr>& fallbacks,
                           std::optional<Clock::time_point> deadline,
                           const std::shared_ptr<DialCanceler>& cancel) {
  // Each racer has its own canceler, a child of the caller's (CTX: the
  // context's cancellation reaches both racers through `cancel`).
  auto primary_cancel = cancel ? cancel->child() : DialCanceler::make();
  auto fallback_cancel = cancel ? cancel->child() : DialCanceler::make();
  struct Outcome {
    bool primary = false;
    std::optional<Conn> conn;
    std::optional<OpError> err;
  };
  weft::Channel<Outcome> results(2);     // racers never block on a send
  weft::Channel<int> start_fallback(1);  // closed: the fallback may start

  // Both racers are joined below (two results are always received), so
  // they may use this frame.
  // The racers hold their own channel handles: a send that wakes this
  // fiber never touches a channel this frame has already destroyed.
  weft::go([&, results, primary_cancel]() mutable {
    Outcome o;
    o.primary = true;
    auto r = dial_serial(d, n, primaries, deadline, primary_cancel.get());
    if (r) {
      o.conn = std::move(*r);
    } else {
      o.err = std::move(r).error();
    }
    (void)results.send(std::move(o));  // buffered for both racers, never closed
  });
  weft::go([&, results, start_fallback, fallback_cancel]() mutable {
    (void)start_fallback.recv();
    Outcome o;
    if (std::error_code ce = fallback_cancel->err()) {
      o.err = dial_error(d, n, fallbacks.front(), ce);
    } else {
      auto r = dial_serial(d, n, fallbacks, deadline, fallback_cancel.get());
      if (r) {
        o.conn = std::move(*r);
      } else {
        o.err = std::move(r).error();
      }
    }
    (void)results.send(std::move(o));  // buffered for both racers, never closed
  });
  const auto delay = d.fallback_delay.count() > 0 ? d.fallback_delay
                                                  : std::chrono::nanoseconds(kDefaultFallbackDelay);
  weft::Timer timer(delay, [ch = start_fallback]() mutable { ch.close(); });

  std::optional<Conn> winner;
  std::optional<OpError> primary_err, fallback_err;
  for (int received = 0; received < 2; ++received) {
    Outcome o = *results.recv();
    if (o.conn) {
      if (!winner) {
        winner = std::move(o.conn);
        // Cancel only the loser (Go issue #15035), and let a fallback that
        // has not started yet run to its (immediate) canceled end.
        (o.primary ? fallback_cancel : primary_cancel)->cancel(weft::errc::operation_canceled);
        start_fallback.close();
      } else {
        (void)o.conn->close();  // a late winner is closed
      }
      continue;
    }
    if (o.primary) {
      primary_err = std::move(o.err);
      start_fallback.close();  // the primary failed: no need to wait out the delay
    } else {
      fallback_err = std::move(o.err);
    }
  }
  timer.stop();
  if (winner) return std::move(*winner);
  if (primary_err) return *std::move(primary_err);
  return *std::move(fallback_err);
}

}  // namespace

std::optional<Clock::time_point> Dialer::effective_deadline(Clock::time_point now) const {
  std::optional<Clock::time_point> d;
  if (timeout.count() != 0) {
    const auto t = std::chrono::duration_cast<Clock::duration>(timeout);
    d = weft::detail::add_saturated(now, t);  // a huge timeout stays in the future (D-10)
  }
  if (deadline != Clock::time_point{}) d = d ? std::min(*d, deadline) : deadline;
  return d;
}

Result<Conn> Dialer::dial(std::string_view network, std::string_view address) const {
  return dial_impl(network, address, effective_deadline(Clock::now()), nullptr);
}

Result<Conn> Dialer::dial_addrs(std::string_view network, std::vector<Addr> addrs) const {
  return dial_addrs_impl(network, std::move(addrs), effective_deadline(Clock::now()), nullptr);
}

Result<Conn> Dialer::dial_impl(std::string_view network, std::string_view address,
                               std::optional<Clock::time_point> deadline,
                               const std::shared_ptr<DialCanceler>& cancel,
                               const Context& ctx) const {
  auto n = detail::parse_network(network);
  if (!n) return wrap_dial(NetworkInfo{std::string(network)}, detail::unknown_network(network));
  if (address.empty()) return wrap_dial(*n, OpError(weft::errc::missing_address));
  // Resolution comes first even when ctx is already done, as Go's: a lookup
  // bound to a done ctx fails at once with its own error, and a literal
  // address needs no lookup, so the serial dial's check of the canceler
  // fails it before any socket, naming the address (DL-5a). A lookup that
  // ctx cancels midway returns at once (its getaddrinfo finishes in the
  // background).
  auto list = detail::resolve_list(*n, address, ctx, resolver.get());
  if (!list) return wrap_dial(*n, std::move(list).error());
  return dial_addrs_impl(network, std::move(*list), deadline, cancel);
}

Result<Conn> Dialer::dial_addrs_impl(std::string_view network, std::vector<Addr> addrs,
                                     std::optional<Clock::time_point> deadline,
                                     const std::shared_ptr<DialCanceler>& cancel) const {
  auto n = detail::parse_network(network);
  if (!n) return wrap_dial(NetworkInfo{std::string(network)}, detail::unknown_network(network));
  if (addrs.empty()) return wrap_dial(*n, OpError(weft::errc::missing_address));
  // A specific local IP keeps only the addresses of its family (Go's
  // resolveAddrList with a hint); a wildcard one keeps them all.
  if (local_addr && local_addr->is_ip() && local_addr->ip().valid() &&
      !local_addr->ip().is_unspecified()) {
    const bool local_v4 = local_addr->ip().is_v4();
    std::erase_if(addrs, [&](const Addr& a) { return a.is_ip() && a.ip().is_v4() != local_v4; });
    if (addrs.empty()) {
      return wrap_dial(*n,
                       detail::addr_error(local_addr->to_string(), "no suitable address found"));
    }
  }
  if (std::error_code e = detail::need_runtime()) return dial_error(*this, *n, addrs.front(), e);
  if (network == "tcp" && fallback_delay.count() >= 0) {
    const bool first_v4 = addrs.front().ip().is_v4();
    std::vector<Addr> primaries, fallbacks;
    for (Addr& a : addrs) (a.ip().is_v4() == first_v4 ? primaries : fallbacks).push_back(a);
    if (!fallbacks.empty()) return dial_parallel(*this, *n, primaries, fallbacks, deadline, cancel);
  }
  return dial_serial(*this, *n, addrs, deadline, cancel.get());
}

Result<Conn> dial(std::string_view network, std::string_view address) {
  return Dialer{}.dial(network, address);
}

Result<Conn> dial_timeout(std::string_view network, std::string_view address,
                          std::chrono::nanoseconds timeout) {
  Dialer d;
  d.timeout = timeout;
  return d.dial(network, address);
}

}  // namespace weft::net
