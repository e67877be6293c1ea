// Socket operations bound to a context. The context reaches a parked
// operation through the deadline, not through a second wake path (DESIGN.md,
// "Deadlines and cancellation"): a DoneHook, run inside the cancel() itself,
// sets an already-expired deadline on the operation's direction; the parked
// fiber wakes with `timeout`, and the call reports the context's error
// instead. Afterwards the user's own deadline is put back, so a cancel that
// raced the operation's completion leaves the connection usable.
#include <utility>

#include "fd.h"
#include "net_internal.h"
#include "weft/context.h"
#include "weft/net/conn.h"

namespace weft::net {

namespace {

using detail::NetFD;
using detail::no_socket;
using weft::detail::PollMode;

struct ExpireOnDone {
  NetFD* fd;
  PollMode mode;
  static void fire(void* self) {
    auto* e = static_cast<ExpireOnDone*>(self);
    weft::detail::poll_set_deadline(e->fd->pd(), weft::detail::kDeadlineLongPast, e->mode);
  }
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

// Runs `op` (an operation on fd in `mode`) so that ctx's cancellation ends it.
template <class R, class Op>
R bound_to(const Context& ctx, NetFD* fd, PollMode mode, const char* opname, Op op) {
  if (std::error_code e = ctx.err()) return failed<R>(fd->op_error(opname, e));
  // A reference keeps the desc ours while the hook may touch it.
  if (!fd->incref()) return op();  // closed: op reports it as usual
  ExpireOnDone expire{fd, mode};
  weft::detail::DoneHook hook(&ExpireOnDone::fire, &expire);
  if (std::error_code e = weft::detail::attach_done_hook(ctx, &hook)) {
    fd->decref();
    return failed<R>(fd->op_error(opname, e));
  }
  R r = op();
  if (!weft::detail::detach_done_hook(ctx, &hook)) {
    // The hook ran (and has finished): undo the expired deadline.
    weft::detail::poll_set_deadline(fd->pd(), fd->user_deadline(mode), mode);
    // The timeout our own expired deadline caused becomes ctx's error.
    if (OpError* err = error_of(r); err && err->err == weft::errc::timeout) err->err = ctx.err();
  }
  fd->decref();
  return r;
}

}  // namespace

IoResult Conn::read(const Context& ctx, void* buf, std::size_t n) {
  if (!fd_) return {0, no_socket("read")};
  return bound_to<IoResult>(ctx, fd_.get(), PollMode::read, "read",
                            [&] { return fd_->read(buf, n); });
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
  return bound_to<IoResult>(ctx, fd_.get(), PollMode::write, "write",
                            [&] { return fd_->write(buf, n); });
}

Result<Conn> Listener::accept(const Context& ctx) {
  if (!fd_) return no_socket("accept");
  return bound_to<Result<Conn>>(ctx, fd_.get(), PollMode::read, "accept", [&] { return accept(); });
}

std::error_code detail::map_context_error(std::error_code ctx_err) noexcept {
  return ctx_err == weft::errc::deadline_exceeded ? make_error_code(weft::errc::timeout)
                                                  : make_error_code(weft::errc::operation_canceled);
}

namespace {

using detail::map_context_error;

struct CancelDialOnDone {
  detail::DialCanceler* canceler;
  const Context* ctx;
  static void fire(void* self) {
    auto* c = static_cast<CancelDialOnDone*>(self);
    // ctx's error is published before its hooks run; reading it takes no lock.
    c->canceler->cancel(map_context_error(c->ctx->err()));
  }
};

}  // namespace

Result<Conn> Dialer::dial(const Context& ctx, std::string_view network,
                          std::string_view address) const {
  auto canceler = detail::DialCanceler::make();
  // Already done: the dial fails before any socket exists, as Go's does. A
  // name that needs a lookup fails in it ("dial tcp: lookup HOST: operation
  // was canceled"); a literal address needs none and fails in the serial
  // dial, naming it ("dial tcp 127.0.0.1:80: operation was canceled", or
  // "... i/o timeout" for a deadline).
  if (std::error_code e = ctx.err()) canceler->cancel(map_context_error(e));
  std::optional<Clock::time_point> deadline = effective_deadline(Clock::now());
  if (auto ctx_deadline = ctx.deadline()) {
    deadline = deadline ? std::min(*deadline, *ctx_deadline) : *ctx_deadline;
  }
  CancelDialOnDone on_done{canceler.get(), &ctx};
  weft::detail::DoneHook hook(&CancelDialOnDone::fire, &on_done);
  const bool attached = !weft::detail::attach_done_hook(ctx, &hook);
  if (!attached && !canceler->err()) canceler->cancel(map_context_error(ctx.err()));
  auto r = dial_impl(network, address, deadline, canceler, ctx);
  // After this, the hook has run to completion or never will: `on_done` may go.
  if (attached) weft::detail::detach_done_hook(ctx, &hook);
  return r;
}

Result<Conn> dial(const Context& ctx, std::string_view network, std::string_view address) {
  return Dialer{}.dial(ctx, network, address);
}

}  // namespace weft::net
