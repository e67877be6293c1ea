// Runtime-internal side of the netpoller: what the scheduler calls.
#pragma once

#include <atomic>
#include <cstdint>

#include "fiber.h"
#include "slot_arena.h"
#include "weft/detail/netpoll.h"
#include "weft/poller.h"

namespace weft::detail {

// Wakes the fibers that the poller's events are for (stale events for a
// recycled desc are dropped). Call from a worker or any thread; `now` is
// mono_now_ns() read just after the poll returned (the poller latency's
// start, and Scheduler::last_poll's).
void netpoll_dispatch(const poll::Event* events, int n, std::int64_t now);

// Parked I/O waiters; the scheduler only polls when there are some.
int netpoll_waiters() noexcept;
// The count's runtime: from the one starting (with its generation, before
// its workers start), and none once it ended (after they joined).
void netpoll_runtime_begins(std::uint32_t gen) noexcept;
void netpoll_runtime_ends() noexcept;
// Fibers the poller has readied (readiness or a deadline), process-wide.
std::uint64_t netpoll_wakeups() noexcept;

// One step of giving back the pages of descs freed at least `min_idle_ms`
// ago (sysmon's scavenge rounds; slot_arena.h). Returns the chunks given
// back by this call.
std::size_t scavenge_poll_descs(std::uint32_t min_idle_ms);
SlotArenaStats poll_desc_stats();

// For the idle-stack sweep (idle_stack.h): takes f off the socket slot it
// is parked on, leaving the slot as a park commit in progress leaves it;
// false if f is not parked there.
bool netpoll_hold_parked(std::atomic<std::uintptr_t>* slot, Fiber* f);
// Puts a held f back; false if a waker came meanwhile, and f is then the
// caller's to ready.
bool netpoll_put_back_parked(std::atomic<std::uintptr_t>* slot, Fiber* f);

// The token a desc is registered under (for tests of stale events).
std::uint64_t poll_token(const PollDesc* pd);

}  // namespace weft::detail
