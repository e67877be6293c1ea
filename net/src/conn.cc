// Socket, Conn, PacketConn, Listener; listen and adopt.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fd.h"
#include "net_internal.h"
#include "weft/detail/saturate.h"
#include "weft/net/resolve.h"

namespace weft::net {

using detail::errno_code;
using detail::NetFD;
using detail::no_socket;

namespace {

std::chrono::system_clock::duration until(std::chrono::system_clock::time_point t) {
  return weft::detail::add_saturated(t.time_since_epoch(),
                                     -std::chrono::system_clock::now().time_since_epoch());
}

// Far futures stay far instead of overflowing into "expired" (D-10).
Clock::time_point to_steady(std::chrono::system_clock::time_point t) {
  if (t == std::chrono::system_clock::time_point{}) return {};
  return weft::detail::add_saturated(Clock::now(),
                                     std::chrono::duration_cast<Clock::duration>(until(t)));
}

}  // namespace

namespace detail {

// TCP defaults of a fresh connection: no Nagle, keep-alive per `period`.
void setup_tcp_conn(NetFD& fd, std::chrono::nanoseconds keep_alive) {
  if (fd.sotype() != SOCK_STREAM || fd.family() == AF_UNIX) return;
  int one = 1;
  ::setsockopt(fd.sysfd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (keep_alive.count() < 0) return;
  KeepAliveConfig config;
  if (keep_alive.count() > 0) {
    const auto secs = std::max<std::chrono::seconds>(
        std::chrono::seconds(1), std::chrono::ceil<std::chrono::seconds>(keep_alive));
    config.idle = config.interval = secs;
  }
  int on = 1, idle = static_cast<int>(config.idle.count()),
      intvl = static_cast<int>(config.interval.count()), cnt = config.count;
  ::setsockopt(fd.sysfd(), SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd.sysfd(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd.sysfd(), IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
  ::setsockopt(fd.sysfd(), IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

}  // namespace detail

// --- Socket ---

Socket::Socket() noexcept = default;
Socket::Socket(std::unique_ptr<NetFD> fd) noexcept : fd_(std::move(fd)) {}
Socket::Socket(Socket&&) noexcept = default;
Socket& Socket::operator=(Socket&&) noexcept = default;
Socket::~Socket() = default;  // NetFD's destructor closes

Result<void> Socket::close() {
  if (!fd_) return no_socket("close");
  return fd_->close();
}

Result<void> Socket::set_deadline(Clock::time_point t) {
  if (!fd_) return no_socket("set");
  return fd_->set_deadline(t, detail::PollMode::both);
}
Result<void> Socket::set_read_deadline(Clock::time_point t) {
  if (!fd_) return no_socket("set");
  return fd_->set_deadline(t, detail::PollMode::read);
}
Result<void> Socket::set_write_deadline(Clock::time_point t) {
  if (!fd_) return no_socket("set");
  return fd_->set_deadline(t, detail::PollMode::write);
}
Result<void> Socket::set_deadline(std::chrono::system_clock::time_point t) {
  return set_deadline(to_steady(t));
}
Result<void> Socket::set_read_deadline(std::chrono::system_clock::time_point t) {
  return set_read_deadline(to_steady(t));
}
Result<void> Socket::set_write_deadline(std::chrono::system_clock::time_point t) {
  return set_write_deadline(to_steady(t));
}

const Addr& Socket::local_addr() const {
  static const Addr none;
  return fd_ ? fd_->laddr() : none;
}

int Socket::native_handle() const noexcept {
  return fd_ && !fd_->closed() ? fd_->sysfd() : -1;
}

Result<void> Socket::set_read_buffer(int bytes) {
  if (!fd_) return no_socket("set");
  return fd_->setsockopt_int(SOL_SOCKET, SO_RCVBUF, bytes);
}

Result<void> Socket::set_write_buffer(int bytes) {
  if (!fd_) return no_socket("set");
  return fd_->setsockopt_int(SOL_SOCKET, SO_SNDBUF, bytes);
}

// --- Conn ---

IoResult Conn::read(void* buf, std::size_t n) {
  if (!fd_) return {0, no_socket("read")};
  return fd_->read(buf, n);
}

IoResult Conn::read_full(void* buf, std::size_t n) {
  auto* p = static_cast<char*>(buf);
  std::size_t got = 0;
  while (got < n) {
    IoResult r = read(p + got, n - got);
    got += r.count();
    if (!r) {
      if (r.is_eof() && got > 0) return {got, OpError(net_errc::unexpected_eof)};
      return {got, r.error()};
    }
  }
  return IoResult(got);
}

IoResult Conn::write(const void* buf, std::size_t n) {
  if (!fd_) return {0, no_socket("write")};
  return fd_->write(buf, n);
}

IoResult Conn::write_buffers(std::span<const std::string_view> buffers) {
  if (!fd_) return {0, no_socket("write")};
  return fd_->write_buffers(buffers);
}

Result<void> Conn::close_read() {
  if (!fd_) return no_socket("close");
  return fd_->shutdown(SHUT_RD);
}

Result<void> Conn::close_write() {
  if (!fd_) return no_socket("close");
  return fd_->shutdown(SHUT_WR);
}

const Addr& Conn::remote_addr() const {
  static const Addr none;
  return fd_ ? fd_->raddr() : none;
}

Result<void> Conn::set_no_delay(bool on) {
  if (!fd_) return no_socket("set");
  return fd_->setsockopt_int(IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0);
}

Result<void> Conn::set_keep_alive(bool on) {
  if (!fd_) return no_socket("set");
  return fd_->setsockopt_int(SOL_SOCKET, SO_KEEPALIVE, on ? 1 : 0);
}

Result<void> Conn::set_keep_alive_config(const KeepAliveConfig& config) {
  if (!fd_) return no_socket("set");
  if (auto r = fd_->setsockopt_int(SOL_SOCKET, SO_KEEPALIVE, config.enable ? 1 : 0); !r) return r;
  if (!config.enable) return {};
  if (config.idle.count() > 0) {
    auto r = fd_->setsockopt_int(IPPROTO_TCP, TCP_KEEPIDLE, static_cast<int>(config.idle.count()));
    if (!r) return r;
  }
  if (config.interval.count() > 0) {
    auto r =
        fd_->setsockopt_int(IPPROTO_TCP, TCP_KEEPINTVL, static_cast<int>(config.interval.count()));
    if (!r) return r;
  }
  if (config.count > 0) return fd_->setsockopt_int(IPPROTO_TCP, TCP_KEEPCNT, config.count);
  return {};
}

Result<void> Conn::set_linger(int seconds) {
  if (!fd_) return no_socket("set");
  if (!fd_->incref()) return fd_->op_error("set", weft::errc::closed);
  linger l{};
  l.l_onoff = seconds >= 0 ? 1 : 0;
  l.l_linger = seconds >= 0 ? seconds : 0;
  const int r = ::setsockopt(fd_->sysfd(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
  const int e = errno;
  fd_->decref();
  if (r < 0) return fd_->op_error("set", errno_code(e), "setsockopt");
  return {};
}

// --- PacketConn ---

Result<PacketConn::Datagram> PacketConn::read_from(void* buf, std::size_t n) {
  if (!fd_) return no_socket("read");
  return fd_->read_from(buf, n);
}

IoResult PacketConn::write_to(const void* buf, std::size_t n, const Addr& to) {
  if (!fd_) return {0, no_socket("write")};
  return fd_->write_to(buf, n, to);
}

// --- Listener ---

Result<Conn> Listener::accept() {
  if (!fd_) return no_socket("accept");
  auto r = fd_->accept();
  if (!r) return std::move(r).error();
  std::unique_ptr<NetFD> conn = std::move(*r);
  detail::setup_tcp_conn(*conn, fd_->accept_keep_alive);
  return SocketAccess::make<Conn>(std::move(conn));
}

// --- listen ---

namespace {

OpError listen_error(std::string_view network, std::optional<Addr> addr, OpError cause) {
  cause.op = "listen";
  cause.net = std::string(network);
  cause.source.reset();
  cause.addr = std::move(addr);
  return cause;
}

// A bound (and for streams, listening) socket for `network`/`address`; ctx
// bounds the name's lookup only (Go's ListenConfig).
Result<std::unique_ptr<NetFD>> bind_socket(const ListenConfig& cfg, const Context& ctx,
                                           std::string_view network, std::string_view address,
                                           bool packet) {
  auto n = detail::parse_network(network);
  const bool stream_kind = n && n->sotype != SOCK_DGRAM;
  if (!n || stream_kind == packet) {
    return listen_error(network, std::nullopt, detail::unknown_network(network));
  }
  Addr la;
  if (n->family == AF_UNIX) {
    la = Addr::unix_name(n->name, std::string(address));  // empty: autobind
  } else {
    auto list = detail::resolve_list(*n, address, ctx, cfg.resolver.get());
    if (!list) return listen_error(network, std::nullopt, std::move(list).error());
    la = list->front();
    for (const Addr& a : *list) {  // Go: the first IPv4 address if there are several
      if (a.ip().is_v4()) {
        la = a;
        break;
      }
    }
  }
  int family = AF_UNIX;
  bool v6only = false;
  if (n->family != AF_UNIX) {
    if (la.ip().valid() && la.ip().is_v4() && la.ip().is_unspecified() && n->family == AF_UNSPEC &&
        detail::ipv6_supported()) {
      family = AF_INET6;  // "tcp" on 0.0.0.0: both families, as Go (favoriteAddrFamily)
    } else if (la.ip().valid()) {
      family = la.ip().is_v4() ? AF_INET : AF_INET6;
      v6only = family == AF_INET6 && n->family == AF_INET6;
    } else if (n->family == AF_INET || (n->family == AF_UNSPEC && !detail::ipv6_supported())) {
      family = AF_INET;
    } else {
      family = AF_INET6;  // "tcp" and no host: both families on [::]
      v6only = n->family == AF_INET6;
    }
  }
  if (std::error_code e = detail::need_runtime()) return listen_error(network, la, OpError(e));
  // Before the socket: a zone that names no interface fails here.
  std::error_code ec;
  sockaddr_storage ss{};
  const socklen_t len = la.to_sockaddr(&ss, family, &ec);
  if (len == 0) return listen_error(network, la, OpError(ec));
  const int s = detail::new_socket(family, n->sotype, 0, &ec);
  auto fail = [&](const char* syscall, int e) {
    OpError cause(errno_code(e));
    cause.syscall = syscall;
    return listen_error(network, la, std::move(cause));
  };
  if (s < 0) return fail("socket", ec.value());
  int one = 1;
  if (family == AF_INET6) {
    int v = v6only ? 1 : 0;
    ::setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof v);
  }
  if (family != AF_UNIX && n->sotype == SOCK_STREAM && cfg.reuse_address) {
    ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  }
  if (family != AF_UNIX && n->sotype == SOCK_DGRAM) {
    ::setsockopt(s, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
  }
  if (cfg.reuse_port && ::setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    const int e = errno;
    ::close(s);
    return fail("setsockopt", e);
  }
  if (::bind(s, reinterpret_cast<sockaddr*>(&ss), len) < 0) {
    const int e = errno;
    ::close(s);
    return fail("bind", e);
  }
  if (!packet && ::listen(s, cfg.backlog < 0 ? SOMAXCONN : cfg.backlog) < 0) {
    const int e = errno;
    ::close(s);
    return fail("listen", e);
  }
  auto fd = NetFD::open(s, family, n->sotype, n->name, &ec);
  if (!fd) return listen_error(network, la, OpError(ec));
  fd->fill_addrs(std::nullopt);
  if (!packet) fd->set_listener(true);
  if (family == AF_UNIX && !packet && !la.name().empty() && la.name()[0] != '@') {
    fd->set_unlink_on_close(la.name());
  }
  fd->accept_keep_alive = cfg.keep_alive;
  return fd;
}

}  // namespace

Result<Listener> ListenConfig::listen(std::string_view network, std::string_view address) const {
  return listen(weft::background(), network, address);
}

Result<Listener> ListenConfig::listen(const Context& ctx, std::string_view network,
                                      std::string_view address) const {
  auto fd = bind_socket(*this, ctx, network, address, false);
  if (!fd) return std::move(fd).error();
  return SocketAccess::make<Listener>(std::move(*fd));
}

Result<PacketConn> ListenConfig::listen_packet(std::string_view network,
                                               std::string_view address) const {
  return listen_packet(weft::background(), network, address);
}

Result<PacketConn> ListenConfig::listen_packet(const Context& ctx, std::string_view network,
                                               std::string_view address) const {
  auto fd = bind_socket(*this, ctx, network, address, true);
  if (!fd) return std::move(fd).error();
  return SocketAccess::make<PacketConn>(std::move(*fd));
}

Result<Listener> listen(std::string_view network, std::string_view address) {
  return ListenConfig{}.listen(network, address);
}

Result<PacketConn> listen_packet(std::string_view network, std::string_view address) {
  return ListenConfig{}.listen_packet(network, address);
}

// --- adopt ---

namespace {

Result<std::unique_ptr<NetFD>> adopt(int fd, std::string_view network, bool peer) {
  auto fail = [&](const char* syscall, std::error_code ec) {
    OpError e(ec);
    e.op = "file";
    e.net = std::string(network);
    e.syscall = syscall;
    return e;
  };
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || ::fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
    const int e = errno;
    ::close(fd);
    return fail("fcntl", errno_code(e));
  }
  int family = 0, sotype = 0;
  socklen_t len = sizeof family;
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) < 0) family = AF_UNSPEC;
  len = sizeof sotype;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &sotype, &len) < 0) sotype = SOCK_STREAM;
  std::error_code ec;
  auto nfd = NetFD::open(fd, family, sotype, std::string(network), &ec);
  if (!nfd) return fail("", ec);
  std::optional<Addr> raddr;
  if (peer) {
    sockaddr_storage ss{};
    socklen_t sl = sizeof ss;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &sl) == 0) {
      raddr = Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), sl, std::string(network));
    }
  }
  nfd->fill_addrs(std::move(raddr));
  return nfd;
}

}  // namespace

Result<Conn> adopt_conn(int fd, std::string_view network) {
  auto r = adopt(fd, network, true);
  if (!r) return std::move(r).error();
  return SocketAccess::make<Conn>(std::move(*r));
}

Result<Listener> adopt_listener(int fd, std::string_view network) {
  auto r = adopt(fd, network, false);
  if (!r) return std::move(r).error();
  (*r)->set_listener(true);
  return SocketAccess::make<Listener>(std::move(*r));
}

Result<PacketConn> adopt_packet_conn(int fd, std::string_view network) {
  auto r = adopt(fd, network, false);
  if (!r) return std::move(r).error();
  return SocketAccess::make<PacketConn>(std::move(*r));
}

}  // namespace weft::net
