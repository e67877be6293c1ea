// The fiber registry: every fiber record that exists, for dumps, metrics and
// deadlock reports (Go's allgs). Internal to the runtime.
//
// - A record joins when its memory is allocated and leaves when it is freed,
//   not at each spawn and exit: records are recycled (records.h), so spawning
//   and ending fibers in a steady state never touch the registry. A record
//   in the registry may therefore be free (in a worker's free array or the
//   depot); what a record says about itself (Fiber::state) and where it is
//   (a run queue, a worker) tell whether it is live (dump.cc).
// - for_each holds the lock: no record is freed while a reader looks at it.
//   A reader must not spawn, park, or free records itself.
// - Records of a runtime that ended stay registered while they stay
//   allocated (fibers parked when main returned); readers skip records whose
//   run_gen is not the running runtime's.
#pragma once

#include <cstddef>
#include <mutex>

#include "fiber.h"
#include "weft/detail/spinlock.h"

namespace weft::detail {

// A record's links in the registry, in front of the Fiber in the same
// allocation (records.h), where constructing the Fiber anew on reuse does
// not reach them: only the registry writes them, under its lock.
struct RecordLinks {
  RecordLinks* prev = nullptr;
  RecordLinks* next = nullptr;
  Fiber* fiber = nullptr;
};

class FiberRegistry {
 public:
  FiberRegistry() { head_.prev = head_.next = &head_; }
  void add(RecordLinks* links) noexcept;
  void remove(RecordLinks* links) noexcept;
  // Unlinks `n` records under one lock (a batch leaving the depot).
  template <class LinksOf>
  void remove_batch(Fiber* const* records, std::size_t n, LinksOf links_of) noexcept {
    std::lock_guard lock(lock_);
    for (std::size_t i = 0; i < n; ++i) unlink(links_of(records[i]));
  }
  template <class Fn>
  void for_each(Fn&& fn) {
    std::lock_guard lock(lock_);
    for (RecordLinks* l = head_.next; l != &head_; l = l->next) fn(l->fiber);
  }

 private:
  static void unlink(RecordLinks* links) noexcept {
    links->prev->next = links->next;
    links->next->prev = links->prev;
    links->prev = links->next = nullptr;
  }
  SpinLock lock_;
  RecordLinks head_;
};

FiberRegistry& fiber_registry() noexcept;

// Milliseconds on a clock that sysmon and waking workers advance: cheap to
// read where a fiber parks (parked_since_ms), coarse (up to sysmon's period,
// 10 ms, behind).
std::uint32_t coarse_now_ms() noexcept;
void advance_coarse_clock() noexcept;

}  // namespace weft::detail
