#include "weft/sync.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "timer.h"
#include "weft/runtime.h"
#include "weft/select.h"

namespace weft {

namespace detail {
void wake_all(QueuedWaiter* chain) noexcept {
  while (chain) {
    QueuedWaiter* next = chain->next;
    chain->waiter.wake();
    chain = next;
  }
}
}  // namespace detail

namespace {
constexpr int kSpins = 40;                         // brief spin before queueing
constexpr std::int64_t kStarvationNs = 1'000'000;  // Go's starvationThresholdNs
}  // namespace

std::uint32_t Mutex::lock_queue() noexcept {
  unsigned spins = 0;
  std::uint32_t s = state_.load(std::memory_order_relaxed);
  for (;;) {
    if (s & kQueueLock) {
      detail::spin_backoff(spins);
      s = state_.load(std::memory_order_relaxed);
      continue;
    }
    if (state_.compare_exchange_weak(s, s | kQueueLock, std::memory_order_acquire)) {
      return s | kQueueLock;
    }
  }
}

void Mutex::lock_slow() {
  // The holder may be running on another worker, about to unlock: spin a
  // little, as Go does, unless the lock is in handoff (starvation) mode. On
  // a single worker the holder cannot run while we spin, so don't.
  if (weft::num_workers() > 1) {
    for (int i = 0; i < kSpins; ++i) {
      if (state_.load(std::memory_order_relaxed) & kHandoff) break;
      if (try_lock()) return;
      detail::cpu_relax();
    }
  }
  std::int64_t waiting_since = 0;
  bool requeue = false;
  for (;;) {
    detail::QueuedWaiter w;
    const std::uint32_t s = lock_queue();
    if (!(s & kLocked)) {
      state_.store((s & ~kQueueLock) | kLocked, std::memory_order_release);
      return;
    }
    // A waiter woken earlier keeps its turn at the front, as in Go.
    if (requeue) {
      queue_.push_front(&w);
    } else {
      queue_.push_back(&w);
    }
    std::uint32_t next = (s & ~kQueueLock) | kWaiters;
    if (waiting_since && detail::mono_now_ns() - waiting_since > kStarvationNs) next |= kHandoff;
    state_.store(next, std::memory_order_release);
    if (!waiting_since) waiting_since = detail::mono_now_ns();
    w.waiter.wait();
    if (w.handed) return;  // unlock passed ownership to us
    requeue = true;
  }
}

void Mutex::unlock_slow() {
  const std::uint32_t s = lock_queue();
  detail::QueuedWaiter* w = queue_.pop_front();
  if (!w) {
    state_.store(0, std::memory_order_release);
    return;
  }
  const std::uint32_t more = queue_.empty() ? 0 : kWaiters;
  if (s & kHandoff) {
    // Starving: the lock goes to the first waiter, nobody barges.
    w->handed = true;
    state_.store(kLocked | more | (more ? kHandoff : 0), std::memory_order_release);
  } else {
    // Woken to compete: a running fiber may still get there first.
    state_.store(more, std::memory_order_release);
  }
  w->waiter.wake();  // w lives on the waiter's stack until woken
}

void CondVar::notify_one() noexcept {
  detail::QueuedWaiter* w;
  {
    std::lock_guard guard(queue_lock_);
    w = queue_.pop_front();
  }
  if (w) w->waiter.wake();
}

void CondVar::notify_all() noexcept {
  detail::QueuedWaiter* chain;
  {
    std::lock_guard guard(queue_lock_);
    chain = queue_.take_all();
  }
  detail::wake_all(chain);
}

void WaitGroup::add(int delta) {
  const std::uint64_t step = static_cast<std::uint64_t>(static_cast<std::int64_t>(delta)) << 32;
  const std::uint64_t s = state_.fetch_add(step, std::memory_order_acq_rel) + step;
  const auto count = static_cast<std::int32_t>(s >> 32);
  const auto waiters = static_cast<std::uint32_t>(s);
  if (count < 0) {
    std::fprintf(stderr,
                 "weft::WaitGroup: negative counter (%d): done() called more often than add()\n",
                 count);
    std::abort();
  }
  if (count > 0 || waiters == 0) return;
  // The counter hit zero with `waiters` counted: release exactly those.
  state_.store(0, std::memory_order_relaxed);
  detail::QueuedWaiter* chain = nullptr;
  {
    std::lock_guard guard(queue_lock_);
    permits_ += waiters;
    while (permits_ > 0 && !queue_.empty()) {
      detail::QueuedWaiter* w = queue_.pop_front();
      --permits_;
      w->next = chain;
      chain = w;
    }
  }
  detail::wake_all(chain);
}

void WaitGroup::wait() {
  std::uint64_t s = state_.load(std::memory_order_acquire);
  for (;;) {
    if ((s >> 32) == 0) return;
    if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) break;
  }
  detail::QueuedWaiter w;
  {
    std::lock_guard guard(queue_lock_);
    if (permits_ > 0) {  // released before we got here
      --permits_;
      return;
    }
    queue_.push_back(&w);
  }
  w.waiter.wait();
}

}  // namespace weft

// ---- select ---------------------------------------------------------------

namespace weft::detail {
namespace {

std::uint32_t select_random() {
  // Read once, before any park: never cached across a switch.
  static thread_local std::uint64_t state =
      0x2545F4914F6CDD1DULL ^ reinterpret_cast<std::uintptr_t>(&state);
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return static_cast<std::uint32_t>(state);
}

constexpr int kSmall = 8;

}  // namespace

int select_cases(SelectCase* const* cases, int n) {
  int default_index = -1;
  SelectCase* order_small[kSmall];
  int poll_small[kSmall];
  std::vector<SelectCase*> order_big;
  std::vector<int> poll_big;
  SelectCase** lock_order = order_small;
  int* poll_order = poll_small;
  if (n > kSmall) {
    order_big.resize(static_cast<std::size_t>(n));
    poll_big.resize(static_cast<std::size_t>(n));
    lock_order = order_big.data();
    poll_order = poll_big.data();
  }
  int active = 0;
  for (int i = 0; i < n; ++i) {
    if (!cases[i]->lock_key()) {
      if (default_index >= 0) {
        std::fprintf(stderr, "weft::select: more than one default case\n");
        std::abort();
      }
      default_index = i;
      continue;
    }
    lock_order[active] = cases[i];
    poll_order[active] = i;
    ++active;
  }
  // Random poll order (Fisher-Yates), address lock order without repeats.
  for (int i = active - 1; i > 0; --i) {
    std::swap(poll_order[i],
              poll_order[static_cast<int>(select_random() % static_cast<std::uint32_t>(i + 1))]);
  }
  std::sort(lock_order, lock_order + active,
            [](SelectCase* a, SelectCase* b) { return a->lock_key() < b->lock_key(); });
  const int unique = static_cast<int>(
      std::unique(lock_order, lock_order + active,
                  [](SelectCase* a, SelectCase* b) { return a->lock_key() == b->lock_key(); }) -
      lock_order);
  auto lock_all = [&] {
    for (int i = 0; i < unique; ++i) lock_order[i]->lock();
  };
  auto unlock_all = [&] {
    for (int i = unique - 1; i >= 0; --i) lock_order[i]->unlock();
  };

  lock_all();
  for (int k = 0; k < active; ++k) {
    const int i = poll_order[k];
    ChanWaiter* peer = nullptr;
    const int ok = cases[i]->try_complete(&peer);
    if (ok >= 0) {
      unlock_all();
      wake_peer(peer);
      cases[i]->run(ok != 0);
      return i;
    }
  }
  if (default_index >= 0) {
    unlock_all();
    cases[default_index]->run(true);
    return default_index;
  }

  SelectGroup group;
  ChanWaiter waiters_small[kSmall];
  std::unique_ptr<ChanWaiter[]> waiters_big;
  ChanWaiter* waiters = waiters_small;
  if (n > kSmall) {
    waiters_big = std::make_unique<ChanWaiter[]>(static_cast<std::size_t>(n));
    waiters = waiters_big.get();
  }
  for (int k = 0; k < active; ++k) {
    const int i = poll_order[k];
    ChanWaiter& w = waiters[i];
    w.group = &group;
    w.case_index = i;
    w.value = cases[i]->value_slot();
    cases[i]->enqueue(&w);
  }
  unlock_all();
  group.waiter.wait();  // select{} with no cases parks forever, as in Go

  const int winner = group.winner.load(std::memory_order_acquire);
  lock_all();
  for (int k = 0; k < active; ++k) {
    const int i = poll_order[k];
    if (i != winner) cases[i]->dequeue(&waiters[i]);
  }
  unlock_all();
  cases[winner]->run(waiters[winner].ok);
  return winner;
}

}  // namespace weft::detail
