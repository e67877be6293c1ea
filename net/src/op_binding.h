// OpBinding: a socket direction's standing link to the context that its
// context-bound operations (Conn::read(ctx, ...) and the rest,
// context_io.cc) run under.
//
// Why it stays linked between operations: a context's cancellation reaches
// an operation through a DoneHook linked into the context's cancel node,
// and a server's connections all bind their reads and writes to the same
// few contexts (its shutdown context). Linking a hook per operation took
// that shared node's lock twice per read and per write, from every core,
// and its cache line crossed cores on each (issue 19's echo: two of the
// hottest lines in the server). So the first operation bound to a context
// links the direction's hook, and it stays linked for as long as the
// direction's operations name the same context: a later one only compares
// the context with the bound one.
//
// Why a late cancel still ends only its own operation: the hook cancels the
// binding's PollOp (poll_op_cancel), which poll_op_begin numbers anew for
// each operation and which is the direction's current op only while one
// bound operation runs. A cancel that comes between operations only marks
// the PollOp; the next operation bound to the same context (done, then)
// fails at once, and one bound to another context rebinds, which unlinks
// the hook (waiting out a cancel running it) before it clears the PollOp.
// A plain operation never runs as the PollOp, so no cancel reaches it.
//
// What it costs: the bound context lives until the direction is bound to
// another one or the socket is destroyed (a Conn that last read under a
// request's context keeps that context, done or not, until then).
//
// Threads: bind() and the destructor run under the direction's lock (or,
// for the destructor, at the socket's last reference); fire() runs inside
// the context's cancel(), on the canceller's thread, and touches only the
// PollOp, under the desc's lock.
#pragma once

#include <optional>

#include "weft/context.h"
#include "weft/detail/netpoll.h"

namespace weft::net::detail {

class NetFD;

class OpBinding {
 public:
  OpBinding(NetFD* fd, weft::detail::PollMode mode) noexcept;
  OpBinding(const OpBinding&) = delete;
  OpBinding& operator=(const OpBinding&) = delete;
  ~OpBinding();

  // Binds the direction to ctx and returns the PollOp for an operation to
  // run as, marked cancelled if ctx is done already; null when ctx can
  // never be done, and the operation then runs as a plain one.
  weft::detail::PollOp* bind(const Context& ctx);

 private:
  static void fire(void* self) noexcept;
  // Unlinks the hook (a cancel running it has finished when this returns)
  // and lets the context go.
  void unbind() noexcept;

  // Every connection that binds holds one per direction (128 bytes of
  // heap each), idle or not: grow it only knowingly.
  NetFD* const fd_;
  Context ctx_;  // the bound context while target_ is set; keeps it alive
  std::optional<weft::detail::HookTarget> target_;  // what the hook links to for ctx_
  weft::detail::DoneHook hook_;
  weft::detail::PollOp op_;  // its fields belong to the desc's lock once the hook is linked
  const weft::detail::PollMode mode_;
};

}  // namespace weft::net::detail
