// The cooperative budget: how a fiber whose operations never wait still lets
// the others run. weft never preempts, and an operation that completes at
// once (a read with data buffered, a send to a waiting receiver) returns
// without a switch, so a fiber streaming over a fast socket would otherwise
// hold its worker, and the poller's ready fibers behind it, for as long as
// the stream lasts. Tokio's answer, taken here: each fiber gets a budget
// (128 units, WEFT_COOP_BUDGET; 0 turns it off) every time it is switched
// in; a channel operation that completes without parking or handing off
// to a parked peer costs 1 unit, and a socket operation, a system call
// some 30 times as long, costs 32. The operation that finds the budget
// spent first polls the network and the timers, so that a fiber whose
// socket became ready meanwhile is seen, and then yields if anything else
// can run. A fiber that parks or yields starts afresh, so one that waits
// never pays more than the subtraction.
#pragma once

#include "weft/detail/cxx20.h"

namespace weft::detail {

inline constexpr int kCoopChannelOp = 1;
inline constexpr int kCoopSocketOp = 32;

// Charges an operation to the running fiber. Call it where the operation
// holds no lock (at its start, or once it has completed without parking):
// it may switch. A no-op on plain threads.
void coop_spend(int units) noexcept;

}  // namespace weft::detail
