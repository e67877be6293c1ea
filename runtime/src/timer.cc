#include "timer.h"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <new>
#include <stdexcept>
#include <thread>
#include <type_traits>

#include "chaos.h"
#include "log.h"
#include "weft/detail/park.h"
#include "weft/detail/saturate.h"
#include "weft/runtime.h"
#include "weft/time.h"

namespace weft::detail {

std::int64_t mono_now_ns() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t coarse_mono_ns() noexcept {
#if defined(CLOCK_MONOTONIC_COARSE)
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
#else
  return mono_now_ns();
#endif
}

namespace {
constexpr std::size_t kArity = 4;  // shallower than binary; Go measured the same
}

void TimerHeap::Entries::grow() {
  static_assert(std::is_trivially_copyable_v<Entry>, "moved by realloc");
  const std::size_t capacity = capacity_ == 0 ? 64 : capacity_ * 2;
  void* grown = std::realloc(data_, capacity * sizeof(Entry));
  if (grown == nullptr) throw std::bad_alloc();
  data_ = static_cast<Entry*>(grown);
  capacity_ = capacity;
}

std::size_t TimerHeap::sift_up(std::size_t i) {
  const Entry e = nodes[i];
  while (i > 0) {
    const std::size_t parent = (i - 1) / kArity;
    if (nodes[parent].when <= e.when) break;
    place(i, nodes[parent]);
    i = parent;
  }
  place(i, e);
  return i;
}

void TimerHeap::sift_down(std::size_t i) {
  const Entry e = nodes[i];
  const std::size_t size = nodes.size();
  for (;;) {
    const std::size_t first = i * kArity + 1;
    if (first >= size) break;
    std::size_t best = first;
    const std::size_t last = first + kArity < size ? first + kArity : size;
    for (std::size_t c = first + 1; c < last; ++c) {
      if (nodes[c].when < nodes[best].when) best = c;
    }
    if (e.when <= nodes[best].when) break;
    place(i, nodes[best]);
    i = best;
  }
  place(i, e);
}

// min_when is published (a seq_cst store, idle.h's pairing with
// timer_added) only when the root changes: a timer behind the earliest
// leaves it as it was, and then add_timer wakes nobody either.
void TimerHeap::push(TimerNode* n) {
  nodes.push_back(Entry{n->when, n});
  n->heap.store(this, std::memory_order_relaxed);
  if (sift_up(nodes.size() - 1) == 0) publish_min();
}

bool TimerHeap::remove_at(std::size_t i) {
  const Entry last = nodes.back();
  nodes.pop_back();
  if (i == nodes.size()) return i == 0;  // it was the last entry
  place(i, last);
  const std::size_t at = sift_up(i);
  sift_down(at);
  return i == 0 || at == 0;
}

void TimerHeap::stop(TimerNode* n) {
  nodes[static_cast<std::size_t>(n->index)].node = nullptr;
  ++dead;
  unqueued(n);
  if (dead == nodes.size()) {  // nothing live: no tombstone need wait
    nodes.clear();
    dead = 0;
    publish_min();
  } else if (dead > live()) {
    compact();
  }
}

// Drops every tombstone and re-heapifies (Floyd's, O(n)).
void TimerHeap::compact() {
  std::size_t kept = 0;
  for (const Entry& e : nodes) {
    if (e.node) nodes[kept++] = e;
  }
  nodes.truncate(kept);
  dead = 0;
  for (std::size_t i = kept / kArity + 1; i-- > 0;) {
    if (i < kept) sift_down(i);
  }
  for (std::size_t i = 0; i < kept; ++i) nodes[i].node->index = static_cast<std::int32_t>(i);
  publish_min();
}

TimerNode* TimerHeap::pop_due(std::int64_t now, Expiry* expiry) {
  bool root_changed = false;
  while (!nodes.empty() && nodes[0].node == nullptr) {  // tombstones that reached the root
    --dead;
    root_changed |= remove_at(0);
  }
  if (nodes.empty() || nodes[0].when > now) {
    if (root_changed) publish_min();
    return nullptr;
  }
  TimerNode* n = nodes[0].node;
  // Copied before the node is published as unqueued: from then on it may
  // be re-armed with new values.
  if (expiry) *expiry = Expiry{n->fire, n->context, n->arg};
  // Counted before the node is published as unqueued (release): an owner
  // that then finds it unqueued and waits sees this expiry.
  n->in_flight.fetch_add(1, std::memory_order_relaxed);
  remove_at(0);
  unqueued(n);
  publish_min();
  return n;
}

void TimerHeap::detach_all() {
  for (const Entry& e : nodes) {
    if (!e.node) continue;
    e.node->index = -1;
    e.node->heap.store(nullptr, std::memory_order_relaxed);
  }
  nodes.clear();
  dead = 0;
  publish_min();
}

int run_due_timers(TimerHeap& heap, std::int64_t now) {
  int fired = 0;
  while (heap.min_when.load(std::memory_order_relaxed) <= now) {
    TimerHeap::Expiry expiry;
    TimerNode* node;
    {
      std::lock_guard lock(heap.lock);
      node = heap.pop_due(now, &expiry);
      if (!node) break;
    }
    chaos::at(chaos::Point::timer_pop);  // popped and published unqueued, not yet fired
    // On whichever worker found the timer due: no caller of its own to take
    // an exception.
    try {
      expiry.fire(expiry.context, expiry.arg);
    } catch (...) {
      die_of_exception("a timer's expiry");
    }
    // The last touch: release pairs with the acquire in stop_timer_and_wait,
    // after which the owner may free the node.
    node->in_flight.fetch_sub(1, std::memory_order_release);
    ++fired;
  }
  return fired;
}

bool stop_timer_and_wait(TimerNode* node) {
  const bool stopped = stop_timer(node);
  for (unsigned spins = 0; node->in_flight.load(std::memory_order_acquire) != 0;) {
    spin_backoff(spins);  // an expiry is between fire() and its last touch
  }
  return stopped;
}

bool stop_timer(TimerNode* node) {
  chaos::at(chaos::Point::timer_change);
  TimerHeap* heap = node->heap.load(std::memory_order_acquire);
  if (!heap) return false;
  std::lock_guard lock(heap->lock);
  if (node->heap.load(std::memory_order_relaxed) != heap) return false;  // fired meanwhile
  heap->stop(node);
  return true;
}

}  // namespace weft::detail

namespace weft {

std::chrono::steady_clock::time_point coarse_now() noexcept {
  // libstdc++'s and libc++'s steady_clock is CLOCK_MONOTONIC, the coarse
  // clock's base.
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(detail::coarse_mono_ns()));
}

void sleep_until(std::chrono::steady_clock::time_point t) {
  const std::int64_t when =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  if (when <= detail::mono_now_ns()) return;
  if (!detail::on_fiber()) {
    std::this_thread::sleep_until(t);
    return;
  }
  detail::TimerNode node;
  node.fire = [](void* fiber, std::uint64_t) { detail::ready(static_cast<detail::Fiber*>(fiber)); };
  // Armed only once parked (Go's resetForSleep): a short timer could
  // otherwise fire before the fiber is off its stack.
  detail::park_with(detail::WaitReason::sleep, [&node, when](detail::Fiber* self) {
    detail::TimerNode* n = &node;
    n->context = self;
    detail::add_timer(n, when);
    return true;
  });
  // The expiry that woke us may not have made its last touch of the node,
  // which lives in this frame.
  detail::stop_timer_and_wait(&node);
}

void sleep_for(std::chrono::nanoseconds d) {
  if (d.count() <= 0) return;
  sleep_until(detail::add_saturated(std::chrono::steady_clock::now(), d));
}

void Timer::on_fire(void* context, std::uint64_t) {
  auto* self = static_cast<Timer*>(context);
  weft::go([fn = self->fn_] { fn(); });  // fn_ never changes: no lock
}

bool Timer::reset(std::chrono::nanoseconds d) {
  using std::chrono::nanoseconds;
  const nanoseconds delay = std::max(d, nanoseconds::zero());
  const std::int64_t when =
      detail::add_saturated(nanoseconds(detail::mono_now_ns()), delay).count();
  std::lock_guard lock(mu_);  // stop and re-arm as one step against other callers
  const bool was_armed = detail::stop_timer(&node_);
  detail::add_timer(&node_, when);
  return was_armed;
}

// Without mu_: stop_timer is safe beside another stop and the expiry (the
// heap lock decides who unqueues the node), and a stop that lands inside a
// reset's stop-then-arm either finds the node unqueued (ordered before the
// reset) or stops the new arming (ordered after it). mu_ only keeps two
// resets from arming the node twice.
bool Timer::stop() {
  return detail::stop_timer(&node_);
}

Timer::~Timer() {
  std::lock_guard lock(mu_);
  detail::stop_timer_and_wait(&node_);
}

// ---- channel timers: Ticker and after() ------------------------------------

namespace detail {

namespace {

// The first period boundary after `now`, counting from `due`: Go's ticker
// rule, which skips the ticks a late expiry missed.
std::int64_t next_tick(std::int64_t due, std::int64_t period, std::int64_t now) noexcept {
  using std::chrono::nanoseconds;
  std::int64_t next = add_saturated(nanoseconds(due), nanoseconds(period)).count();
  if (next <= now) {
    const std::int64_t missed = (now - next) / period + 1;
    std::int64_t skip;
    if (__builtin_mul_overflow(missed, period, &skip)) return kNever;
    next = add_saturated(nanoseconds(next), nanoseconds(skip)).count();
  }
  return next;
}

}  // namespace

ChanTimer::ChanTimer(std::chrono::nanoseconds first, std::chrono::nanoseconds period) {
  node_.fire = &ChanTimer::on_fire;
  node_.context = this;
  ChanWaiter* peer = nullptr;
  {
    std::lock_guard lock(mu_);
    arm_locked(first, period, &peer);
  }
  wake_peer(peer);  // nobody can wait on a channel nobody has seen yet: null
}

ChanTimer::~ChanTimer() {
  {
    std::lock_guard lock(mu_);
    ++seq_;  // an expiry in flight now neither sends nor re-arms
  }
  // Not under mu_: an expiry in flight may be waiting for it, and stop_timer
  // is serialised with its add_timer by mu_ already (the bump above).
  stop_timer_and_wait(&node_);
}

void ChanTimer::deliver_locked(std::int64_t due, ChanWaiter** to_wake) {
  ChanState<TimePoint>& s = *ch_.state();
  TimePoint tick{std::chrono::nanoseconds(due)};
  std::lock_guard lock(s.lock);
  (void)s.try_send(tick, to_wake);  // full (or closed by a copy's owner): dropped
}

void ChanTimer::arm_locked(std::chrono::nanoseconds first, std::chrono::nanoseconds period,
                           ChanWaiter** to_wake) {
  period_ = std::max<std::int64_t>(period.count(), 0);
  const std::int64_t now = mono_now_ns();
  if (first.count() <= 0 && period_ == 0) {
    deliver_locked(now, to_wake);  // due already: no timer, and no runtime needed
    return;
  }
  due_ = add_saturated(std::chrono::nanoseconds(now), std::max(first, std::chrono::nanoseconds(1)))
             .count();
  node_.arg = seq_;
  add_timer(&node_, due_);
}

bool ChanTimer::disarm_locked(ChanWaiter** to_wake) {
  ++seq_;
  bool kept = stop_timer(&node_);
  ChanState<TimePoint>& s = *ch_.state();
  std::optional<TimePoint> stale;
  {
    std::lock_guard lock(s.lock);
    (void)s.try_recv(stale, to_wake);
  }
  return kept || stale.has_value();
}

bool ChanTimer::stop() {
  ChanWaiter* peer = nullptr;
  bool kept;
  {
    std::lock_guard lock(mu_);
    kept = disarm_locked(&peer);
  }
  wake_peer(peer);
  return kept;
}

bool ChanTimer::reset(std::chrono::nanoseconds first, std::chrono::nanoseconds period) {
  ChanWaiter* peers[2] = {nullptr, nullptr};
  bool kept;
  {
    std::lock_guard lock(mu_);
    kept = disarm_locked(&peers[0]);
    arm_locked(first, period, &peers[1]);
  }
  wake_peer(peers[0]);
  wake_peer(peers[1]);
  return kept;
}

void ChanTimer::on_fire(void* context, std::uint64_t seq) {
  auto* self = static_cast<ChanTimer*>(context);
  ChanWaiter* peer = nullptr;
  {
    std::lock_guard lock(self->mu_);
    if (seq != self->seq_) return;  // stopped or reset since this expiry was armed
    self->deliver_locked(self->due_, &peer);
    if (self->period_ > 0) {
      // The node is ours to re-arm: popped, and not re-armed by anyone else
      // (that would have changed seq_).
      self->due_ = next_tick(self->due_, self->period_, mono_now_ns());
      self->node_.arg = seq;
      add_timer(&self->node_, self->due_);
    }
  }
  // A receiver parked on the channel gets the tick; readied outside both
  // locks, as every channel wakes its peers.
  wake_peer(peer);
}

}  // namespace detail

Ticker::Ticker(std::chrono::nanoseconds period) {
  if (period.count() <= 0) throw std::invalid_argument("weft::Ticker: non-positive period");
  timer_ = std::make_unique<detail::ChanTimer>(period, period);
}

void Ticker::stop() {
  if (timer_) timer_->stop();
}

void Ticker::reset(std::chrono::nanoseconds period) {
  if (period.count() <= 0) throw std::invalid_argument("weft::Ticker::reset: non-positive period");
  if (timer_) timer_->reset(period, period);
}

After after(std::chrono::nanoseconds d) {
  return After(std::make_unique<detail::ChanTimer>(d, std::chrono::nanoseconds(0)));
}

}  // namespace weft
