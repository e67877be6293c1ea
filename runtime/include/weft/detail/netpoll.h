// The bridge between file descriptors and parked fibers: one PollDesc per
// registered fd, with a reader and a writer slot and a deadline for each
// direction (Go's pollDesc). net/ builds sockets on this; users normally
// don't see it.
#pragma once

#include "weft/detail/cxx20.h"

#include <cstdint>
#include <system_error>

namespace weft::detail {

struct PollDesc;
struct Fiber;

enum class PollMode : std::uint8_t { read = 1, write = 2, both = 3 };

enum class PollStatus : std::uint8_t {
  ready,         // try the syscall (again)
  closed,        // the desc was closed (unblocked); ops fail with "closed"
  timeout,       // the deadline for this direction has passed
  not_pollable,  // the poller reported an error condition on the fd
  no_runtime,    // the runtime it was registered with has ended
  canceled,      // the operation itself was cancelled (poll_op_cancel)
};

// One operation's claim on a direction, for a cancellation scoped to it (a
// context-bound read, write or accept). Lives on the operation's stack. Its
// fields belong to the desc's lock: only the poll_op_* calls touch them.
struct PollOp {
  std::uint64_t seq = 0;  // this op's number on the desc; 0 before poll_op_begin
  bool canceled = false;  // poll_op_cancel has run for it
};

// Registers a non-blocking fd with the runtime's poller, once, for both
// directions. Null with `ec` set on failure.
PollDesc* poll_open(int fd, std::error_code* ec);
// Marks the desc closing and wakes both waiters with `closed`.
void poll_unblock(PollDesc* pd);
// Deregisters and recycles the desc; call after poll_unblock, once no
// operation is in progress (or every one left was abandoned with its
// runtime), and before closing the fd.
void poll_close(PollDesc* pd);
// True when the runtime the desc was registered with is no longer the one
// running: its poller is gone, and fibers parked on the desc then were
// abandoned with it and never return.
bool poll_runtime_gone(const PollDesc* pd) noexcept;

// At the start of an operation: `closed`, `canceled` or `timeout` if it must
// fail before the syscall, else `ready` (and any stale readiness is dropped).
PollStatus poll_prepare(PollDesc* pd, PollMode mode);
// Whether a stream read that emptied the socket may wait for readiness
// before its next syscall (NetFD::read): the poller reports every later
// arrival (poll::Poller::reports_every_arrival), and has reported no end or
// error, which stays as input with no edge to come.
bool poll_read_may_wait_first(const PollDesc* pd) noexcept;
// After EAGAIN: parks until the fd is ready in `mode` (read or write), the
// deadline passes, or the desc is closed. One waiter per direction.
PollStatus poll_wait(PollDesc* pd, PollMode mode);
// The park commit of a fiber that has never run (start_fiber_parked),
// waiting in `mode` with no stack: publishes `f` as the direction's waiter,
// so that readiness, the deadline, a close or its op's cancel readies it as
// they would a parked reader. False, publishing nothing, when it is to run
// at once: readiness came, or a deadline, close or cancel. Call it only
// after a syscall said EAGAIN since poll_prepare, as a parking op would.
bool poll_park_unstarted(PollDesc* pd, PollMode mode, Fiber* f);
// After the operation has taken the direction's lock (so it is the one
// operation that may wait in `mode`): numbers `op` and makes it the
// direction's current operation. If `op` was cancelled while it queued for
// the lock, the direction reports `canceled` to it from now on. Only
// operations that can be cancelled call this; the others never touch it.
void poll_op_begin(PollDesc* pd, PollMode mode, PollOp* op);
// Before the operation releases the direction's lock: it is no longer the
// current one, and its cancellation (if any) ends with it.
void poll_op_end(PollDesc* pd, PollMode mode, PollOp* op);
// Cancels `op` and nothing else: marks it, and if it is the direction's
// current operation, makes check/wait report `canceled` to it and wakes it
// if parked. A queued op sees the mark in poll_op_begin. The deadlines and
// every other operation are untouched. True if `op` was the current one.
bool poll_op_cancel(PollDesc* pd, PollMode mode, PollOp* op);

// A socket error the poller's backend consumed on its way (poll::Event's
// `error`), taken once: 0 when there is none. Ask it where the socket's own
// report came back empty (SO_ERROR 0 after a connect, a stream read's 0, a
// datagram read's EAGAIN), which is what the error would have said.
int poll_take_error(PollDesc* pd);

// A deadline long past, for interrupting a parked operation (a cancel);
// like any value below one second of uptime it expires without a clock read.
inline constexpr std::int64_t kDeadlineLongPast = 1;

// Absolute CLOCK_MONOTONIC deadline in ns: 0 clears it, a time not in the
// future expires it at once. Applies to an operation already parked.
void poll_set_deadline(PollDesc* pd, std::int64_t when, PollMode mode);
// The deadline the desc holds for `mode` (read or write): 0 none, -1
// expired, else absolute ns. For tests.
std::int64_t poll_deadline(PollDesc* pd, PollMode mode);

}  // namespace weft::detail
