// Grace periods: memory that a late reader may still hold a pointer into is
// given back only once every reader that could hold one has finished
// (Linux's SRCU, in the shape Go's pollcache never needed because it never
// gives a desc back).
//
// Invariants:
// 1. A reader runs its whole use of such a pointer, from the check that
//    found it current (a generation in memory that is never given back) to
//    its last touch, inside one GraceSection.
// 2. The writer retires memory first (no new reader can find it current),
//    then begins a grace period, and gives the memory back only once done()
//    says so: every section in progress at begin() has ended. A section
//    that began later already sees the memory retired.
// 3. Sections are counted per parity of an epoch that only the writer
//    flips. done() waits for the other parity to drain, flips, and waits for
//    the old one: a section that read the epoch before an earlier flip and
//    counted itself late is caught by the first wait (SRCU's double scan).
//    Each wait is polled, never blocked on: one step per call.
// 4. One writer at a time drives a GracePeriod (sysmon, under its owner's
//    lock). Sections nest and may run on any thread.
#pragma once

#include <atomic>
#include <cstdint>

namespace weft::detail {

class GraceSection {
 public:
  GraceSection() noexcept;
  ~GraceSection();
  GraceSection(const GraceSection&) = delete;
  GraceSection& operator=(const GraceSection&) = delete;

 private:
  std::atomic<std::int64_t>* count_;
};

class GracePeriod {
 public:
  // Covers memory retired before this call; restarts one in progress.
  void begin() noexcept;
  // One step: true once every section in progress at begin() has ended
  // (and from then on, until the next begin()).
  bool done() noexcept;
  bool started() const noexcept { return phase_ != Phase::idle; }

 private:
  enum class Phase { idle, drain_other, drain_old, complete };
  Phase phase_ = Phase::idle;
  std::uint32_t old_parity_ = 0;
};

}  // namespace weft::detail
