// Socket operations bound to a context. The context reaches a parked
// operation through the PollDesc, as an expiry, not through a second wake
// path (DESIGN.md, "Deadlines and cancellation"), but one scoped to that
// operation: the direction's OpBinding links a DoneHook to the context,
// and the hook, run inside the cancel() itself, cancels the PollOp the
// current operation runs as and nothing else (poll_op_cancel). Parked, the
// op wakes with `canceled`; still queued for the direction's lock, it fails
// as soon as it takes it. The user's deadline and every other operation on
// the fd are never touched, so there is nothing to put back afterwards;
// the call reports the context's error. io::copy lives here too: its
// context-bound form runs each step through bound_to.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <optional>
#include <utility>

#include "fd.h"
#include "net_internal.h"
#include "op_binding.h"
#include "weft/context.h"
#include "weft/io.h"
#include "weft/net/conn.h"

namespace weft::net {

namespace {

using detail::NetFD;
using detail::no_socket;
using weft::detail::PollMode;
using weft::detail::PollOp;

// Where an op keeps what links it to its context while it runs: among
// other ops' links, which a cancel walks and their detaches rewrite. On the
// caller's stack, or on the heap when that stack may be given back while
// the op waits (SpawnOptions::swap_idle_stack).
template <class T>
class OpLink {
 public:
  template <class... Args>
  explicit OpLink(Args&&... args) {
    if (weft::detail::current_stack_may_be_given_back()) {
      heap_ = std::make_unique<T>(std::forward<Args>(args)...);
      link_ = heap_.get();
    } else {
      link_ = &local_.emplace(std::forward<Args>(args)...);
    }
  }
  T* operator->() const noexcept { return link_; }

 private:
  std::optional<T> local_;
  std::unique_ptr<T> heap_;
  T* link_;
};

template <class R>
OpError* error_of(R& r) {
  return r ? nullptr : &r.error();
}

// A failed R carrying `e`.
template <class R>
R failed(OpError e);
template <>
IoResult failed<IoResult>(OpError e) {
  return IoResult(0, std::move(e));
}
template <>
Result<Conn> failed<Result<Conn>>(OpError e) {
  return Result<Conn>(std::move(e));
}

// Out of line, as NetFD::io_failed: the OpError stays out of the frame
// that a parked op keeps.
template <class R>
[[gnu::noinline, gnu::cold]] R failed_op(const NetFD* fd, const char* opname, std::error_code e) {
  return failed<R>(fd->op_error(opname, e));
}

// Runs `op` (an operation on fd, given the context to bind it to) so that
// ctx's cancellation ends it and nothing else.
template <class R, class Op>
R bound_to(const Context& ctx, NetFD* fd, const char* opname, Op op) {
  if (std::error_code e = ctx.err()) return failed_op<R>(fd, opname, e);
  R r = op(&ctx);
  // Only ctx's cancellation cancels an op bound to it (OpBinding), so
  // `operation_canceled` from the op means it did: report ctx's error.
  if (OpError* err = error_of(r); err && err->err == weft::errc::operation_canceled) {
    if (std::error_code e = ctx.err()) err->err = e;
  }
  return r;
}

}  // namespace

namespace detail {

// 120 bytes, a 128-byte block from malloc: see OpBinding's members.
static_assert(sizeof(OpBinding) <= 120, "an OpBinding grew");

OpBinding::OpBinding(NetFD* fd, PollMode mode) noexcept
    : fd_(fd), hook_(&OpBinding::fire, this), mode_(mode) {}

OpBinding::~OpBinding() {
  unbind();
}

PollOp* OpBinding::bind(const Context& ctx) {
  // The same context as the last op's: the hook is still linked, or it ran
  // (ctx is done) and marked op_, which poll_op_begin then reports.
  if (target_ && ctx == ctx_) return &op_;
  if (!weft::detail::ContextAccess::signal(ctx)) return nullptr;  // never done
  unbind();
  ctx_ = ctx;
  target_.emplace(ctx_);
  // No hook is linked here, so nothing else touches op_: a fresh one, not
  // cancelled by the context bound before.
  op_ = PollOp{};
  if (weft::detail::attach_done_hook(target_->ctx(), &hook_)) op_.canceled = true;  // done
  return &op_;
}

void OpBinding::unbind() noexcept {
  if (!target_) return;
  (void)weft::detail::detach_done_hook(target_->ctx(), &hook_);
  target_.reset();
  ctx_ = Context();
}

void OpBinding::fire(void* self) noexcept {
  auto* b = static_cast<OpBinding*>(self);
  // An accept backing off after EMFILE sleeps on the listener's write
  // side: wake it too, so that it sees its read side cancelled.
  if (weft::detail::poll_op_cancel(b->fd_->pd(), b->mode_, &b->op_) && b->mode_ == PollMode::read) {
    b->fd_->poke_backoff();
  }
}

}  // namespace detail

IoResult Conn::read(const Context& ctx, void* buf, std::size_t n) {
  if (!fd_) return {0, no_socket("read")};
  return bound_to<IoResult>(ctx, fd_.get(), "read",
                            [&](const Context* c) { return fd_->read(buf, n, c); });
}

IoResult Conn::read_full(const Context& ctx, void* buf, std::size_t n) {
  auto* p = static_cast<char*>(buf);
  std::size_t got = 0;
  while (got < n) {
    IoResult r = read(ctx, p + got, n - got);
    got += r.count();
    if (!r) {
      if (r.is_eof() && got > 0) return {got, OpError(net_errc::unexpected_eof)};
      return {got, r.error()};
    }
  }
  return IoResult(got);
}

IoResult Conn::write(const Context& ctx, const void* buf, std::size_t n) {
  if (!fd_) return {0, no_socket("write")};
  return bound_to<IoResult>(ctx, fd_.get(), "write",
                            [&](const Context* c) { return fd_->write(buf, n, c); });
}

IoResult Conn::write_buffers(const Context& ctx, std::span<const std::string_view> buffers) {
  if (!fd_) return {0, no_socket("write")};
  return bound_to<IoResult>(ctx, fd_.get(), "write",
                            [&](const Context* c) { return fd_->write_buffers(buffers, c); });
}

Result<Conn> Listener::accept(const Context& ctx) {
  if (!fd_) return no_socket("accept");
  return bound_to<Result<Conn>>(ctx, fd_.get(), "accept", [&](const Context* c) -> Result<Conn> {
    auto r = fd_->accept(c);  // Listener::accept() bound to c
    if (!r) return std::move(r).error();
    std::unique_ptr<NetFD> conn = std::move(*r);
    detail::setup_tcp_conn(*conn, fd_->accept_keep_alive);
    return SocketAccess::make<Conn>(std::move(conn));
  });
}

std::uint64_t detail::ReadableWait::start(Conn& conn, const Context& ctx, weft::detail::Fiber* f,
                                          const weft::detail::Closure* vtable) {
  NetFD* fd = SocketAccess::fd(conn);
  // Anything that would end a read at once ends the wait at once: the
  // fiber's own read then reports it. closed() before the desc: a closed
  // socket's desc may be recycled already. (A desc of an ended runtime is
  // refused by the commit, poll_park_unstarted.)
  if (!fd || fd->closed() || ctx.err() || fd->prepare_read() != weft::detail::PollStatus::ready) {
    return weft::detail::start_fiber(f, vtable);
  }
  // The fiber parks only after a read would have said EAGAIN, as a read
  // does: an edge-triggered poller reports nothing for input that came
  // before the edge it consumed (a handler that read part of it), and
  // poll_prepare has just dropped that edge.
  char byte;
  if (::recv(fd->sysfd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) >= 0 ||
      (errno != EAGAIN && errno != EWOULDBLOCK)) {
    return weft::detail::start_fiber(f, vtable);
  }
  // As a read bound to ctx: the wait holds the connection alone, so it
  // binds the read side without its lock. A ctx done by now marks the op,
  // and the commit then refuses to park (poll_park_unstarted's check).
  fd_ = fd;
  op_ = fd->bind(PollMode::read, ctx);
  if (op_) weft::detail::poll_op_begin(fd->pd(), PollMode::read, op_);
  return weft::detail::start_fiber_parked(
      f, vtable,
      {&ReadableWait::commit, this, weft::detail::WaitReason::io_read,
       static_cast<std::uint64_t>(fd->sysfd())});
}

bool detail::ReadableWait::commit(weft::detail::Fiber* f, void* self) {
  // After this publishes f, the fiber may run and end (freeing this): read
  // nothing after it.
  return weft::detail::poll_park_unstarted(static_cast<ReadableWait*>(self)->fd_->pd(),
                                           PollMode::read, f);
}

void detail::ReadableWait::end() noexcept {
  if (!fd_) return;
  // The binding stays, for the fiber's reads; a cancel after this finds
  // the op no longer current and only marks it (OpBinding).
  if (op_) weft::detail::poll_op_end(fd_->pd(), PollMode::read, op_);
  fd_ = nullptr;
  op_ = nullptr;
}

std::error_code detail::map_context_error(std::error_code ctx_err) noexcept {
  return ctx_err == weft::errc::deadline_exceeded ? make_error_code(weft::errc::timeout)
                                                  : make_error_code(weft::errc::operation_canceled);
}

namespace {

using detail::map_context_error;

struct CancelDialOnDone {
  detail::DialCanceler* canceler;
  const Context* ctx;  // the DialBinding's copy: the caller's may be on its stack
  static void fire(void* self) {
    auto* c = static_cast<CancelDialOnDone*>(self);
    // ctx's error is published before its hooks run; reading it takes no lock.
    c->canceler->cancel(map_context_error(c->ctx->err()));
  }
};

struct DialBinding {
  DialBinding(detail::DialCanceler* canceler, const Context& caller_ctx)
      : ctx(caller_ctx),
        on_done{canceler, &ctx},
        hook(&CancelDialOnDone::fire, &on_done),
        target(ctx) {}
  const Context ctx;
  CancelDialOnDone on_done;
  weft::detail::DoneHook hook;
  const weft::detail::HookTarget target;  // a user's context may need a watcher
};

// Runs `dial(deadline, canceler)` (dial_impl or dial_addrs_impl) bound to
// ctx: the earliest of the Dialer's bounds and ctx's deadline is the
// deadline, and ctx's cancellation reaches the canceler through a DoneHook.
// Already done: the canceler starts out canceled, so the dial fails before
// any socket exists, as Go's does. A name that needs a lookup fails in it
// ("dial tcp: lookup HOST: operation was canceled"); an address needs none
// and fails in the serial dial, naming it ("dial tcp 127.0.0.1:80:
// operation was canceled", or "... i/o timeout" for a deadline).
template <class Dial>
Result<Conn> bound_dial(const Dialer& d, const Context& ctx, Dial dial) {
  auto canceler = detail::DialCanceler::make();
  if (std::error_code e = ctx.err()) canceler->cancel(map_context_error(e));
  std::optional<Clock::time_point> deadline = d.effective_deadline(Clock::now());
  if (auto ctx_deadline = ctx.deadline()) {
    deadline = deadline ? std::min(*deadline, *ctx_deadline) : *ctx_deadline;
  }
  const OpLink<DialBinding> b(canceler.get(), ctx);
  const bool attached = !weft::detail::attach_done_hook(b->target.ctx(), &b->hook);
  if (!attached && !canceler->err()) canceler->cancel(map_context_error(ctx.err()));
  auto r = dial(deadline, canceler);
  // After this, the hook has run to completion or never will: `b` may go.
  if (attached) weft::detail::detach_done_hook(b->target.ctx(), &b->hook);
  return r;
}

}  // namespace

Result<Conn> Dialer::dial(const Context& ctx, std::string_view network,
                          std::string_view address) const {
  return bound_dial(*this, ctx, [&](auto deadline, const auto& canceler) {
    return dial_impl(network, address, deadline, canceler, ctx);
  });
}

Result<Conn> Dialer::dial_addrs(const Context& ctx, std::string_view network,
                                std::vector<Addr> addrs) const {
  return bound_dial(*this, ctx, [&](auto deadline, const auto& canceler) {
    return dial_addrs_impl(network, std::move(addrs), deadline, canceler);
  });
}

Result<Conn> dial(const Context& ctx, std::string_view network, std::string_view address) {
  return Dialer{}.dial(ctx, network, address);
}

namespace {

// One step of a copy: plain, or bound to ctx (then a cancel ends it).
template <class Op>
IoResult step(const Context* ctx, NetFD* fd, const char* opname, Op op) {
  if (!ctx) return op(nullptr);
  return bound_to<IoResult>(*ctx, fd, opname, op);
}

IoResult copy_through_buffer(const Context* ctx, NetFD* dst, NetFD* src) {
  std::unique_ptr<char[]> buf(new char[32 * 1024]);  // Go's io.Copy buffer size
  std::size_t total = 0;
  for (;;) {
    IoResult r = step(ctx, src, "read",
                      [&](const Context* c) { return src->read(buf.get(), 32 * 1024, c); });
    if (!r) {
      if (r.is_eof()) return IoResult(total);
      return {total, r.error()};
    }
    IoResult w =
        step(ctx, dst, "write", [&](const Context* c) { return dst->write(buf.get(), *r, c); });
    total += w.count();
    if (!w) return {total, w.error()};
  }
}

IoResult copy_impl(const Context* ctx, Conn& dst_conn, Conn& src_conn) {
  NetFD* dst = SocketAccess::fd(dst_conn);
  NetFD* src = SocketAccess::fd(src_conn);
  if (!src) return {0, no_socket("read")};
  if (!dst) return {0, no_socket("write")};
  if (!src->stream() || !dst->stream()) return copy_through_buffer(ctx, dst, src);
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) return copy_through_buffer(ctx, dst, src);
  // The kernel's default pipe holds 64 KiB; a larger one halves the
  // syscalls per megabyte. Best effort: the default works too.
  ::fcntl(pipe_fds[1], F_SETPIPE_SZ, 1 << 20);
  const std::size_t chunk =
      static_cast<std::size_t>(std::max(::fcntl(pipe_fds[1], F_GETPIPE_SZ), 4096));
  std::size_t total = 0;
  IoResult result;
  for (;;) {
    IoResult in = step(ctx, src, "read", [&](const Context* c) {
      return src->splice_to_pipe(pipe_fds[1], chunk, c);
    });
    if (!in) {
      result = in.is_eof() ? IoResult(total) : IoResult(total, in.error());
      break;
    }
    IoResult out = step(ctx, dst, "write", [&](const Context* c) {
      return dst->splice_from_pipe(pipe_fds[0], *in, c);
    });
    total += out.count();
    if (!out) {
      result = IoResult(total, out.error());
      break;
    }
  }
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  return result;
}

}  // namespace

}  // namespace weft::net

namespace weft::io {

net::IoResult copy(net::Conn& dst, net::Conn& src) {
  return net::copy_impl(nullptr, dst, src);
}

net::IoResult copy(const Context& ctx, net::Conn& dst, net::Conn& src) {
  return net::copy_impl(&ctx, dst, src);
}

}  // namespace weft::io
