#include "weft/sync.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <vector>

#include "timer.h"
#include "weft/detail/coop.h"
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

void Sema::acquire(WaitReason reason) noexcept {
  QueuedWaiter w;
  {
    std::lock_guard guard(lock_);
    if (permits_ > 0) {  // released before we got here
      --permits_;
      return;
    }
    queue_.push_back(&w);
  }
  w.waiter.wait(reason);  // a release between the unlock and here is not lost
}

void Sema::release(std::uint32_t count) noexcept {
  WaiterList woken;
  {
    std::lock_guard guard(lock_);
    for (; count > 0 && !queue_.empty(); --count) woken.push_back(queue_.pop_front());
    permits_ += count;
  }
  // The lock's release was the last access to *this: the party woken (or the
  // one taking the permit) may destroy the owner now.
  wake_all(woken.take_all());
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
    w.waiter.wait(detail::WaitReason::mutex_lock);
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

namespace {
[[noreturn]] void misused_rwmutex(const char* what) {
  std::fprintf(stderr, "weft::RWMutex: %s\n", what);
  std::abort();
}
}  // namespace

void RWMutex::lock() {
  writers_.lock();
  // Closes the door on new readers. acquire: pairs with the release
  // subtraction in unlock_shared(), for the readers that already left.
  const std::int32_t inside = readers_.fetch_sub(kWriterPending, std::memory_order_acquire);
  // Readers still inside count departing_ down from zero meanwhile; adding
  // them brings it to zero exactly when the last one has gone. acq_rel:
  // pairs with the readers' acq_rel subtractions in unlock_shared_slow()
  // when they all left before this add.
  if (inside != 0 && departing_.fetch_add(inside, std::memory_order_acq_rel) + inside != 0) {
    writer_wait_.acquire(detail::WaitReason::rwmutex_lock);
  }
}

bool RWMutex::try_lock() noexcept {
  if (!writers_.try_lock()) return false;
  std::int32_t none = 0;
  // acquire: as in lock(), pairs with unlock_shared()'s release.
  if (readers_.compare_exchange_strong(none, -kWriterPending, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
    return true;
  }
  writers_.unlock();
  return false;
}

void RWMutex::unlock() {
  // Opens the door. release: pairs with the acquire add in lock_shared() and
  // the acquire CAS in try_lock_shared(), for readers that come after.
  const std::int32_t waiting =
      readers_.fetch_add(kWriterPending, std::memory_order_release) + kWriterPending;
  if (waiting >= kWriterPending) misused_rwmutex("unlock of an RWMutex not locked for writing");
  // The readers that queued behind this writer; the Sema's lock orders this
  // writer's writes before their wake-up.
  if (waiting > 0) reader_wait_.release(static_cast<std::uint32_t>(waiting));
  writers_.unlock();
}

bool RWMutex::try_lock_shared() noexcept {
  std::int32_t n = readers_.load(std::memory_order_relaxed);
  while (n >= 0) {
    // acquire: pairs with unlock()'s release add, as in lock_shared().
    if (readers_.compare_exchange_weak(n, n + 1, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

void RWMutex::unlock_shared_slow(std::int32_t now) {
  // From 0 to -1 nobody held it; from -kWriterPending down, a writer holds it
  // and no reader is counted.
  if (now == -1 || now == -kWriterPending - 1) {
    misused_rwmutex("unlock_shared of an RWMutex not locked for reading");
  }
  // A writer is pending and counted this reader as inside. acq_rel: the
  // release half carries this reader's work to the last leaver or to the
  // writer's own add in lock(); the acquire half gathers the earlier
  // leavers' before the last one wakes the writer (the Sema's lock carries
  // it on from there).
  if (departing_.fetch_sub(1, std::memory_order_acq_rel) - 1 == 0) writer_wait_.release(1);
}

void Once::call_slow(void (*invoke)(void*), void* fn) {
  std::lock_guard guard(running_);
  if (done_.load(std::memory_order_relaxed)) return;  // running_ ordered us after the store
  invoke(fn);  // an exception leaves done_ false and unlocks: the next call retries
  // release: pairs with the acquire load in call().
  done_.store(true, std::memory_order_release);
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

namespace detail {
// One counter per worker, each on its own cache line; `closed` once folded.
struct WaitShards {
  struct alignas(64) Shard {
    std::atomic<std::int64_t> delta{0};
  };
  explicit WaitShards(int workers)
      : count(static_cast<std::uint32_t>(workers)), shards(new Shard[count]) {}
  alignas(64) std::atomic<bool> closed{false};
  const std::uint32_t count;
  const std::unique_ptr<Shard[]> shards;
};
}  // namespace detail

namespace {
constexpr std::uint64_t kShardedBit = std::uint64_t{1} << 31;
constexpr std::uint64_t kWaiterMask = kShardedBit - 1;
// What fold_shards leaves in a shard: far below any real count, so that a
// late add() that lands on it sees the shard closed and goes to the word.
constexpr std::int64_t kShardClosed = std::numeric_limits<std::int64_t>::min() / 2;
// Changes of worker at the word before sharding. Low enough that a burst of
// spawns shards early, high enough that a group of a few fibers never pays
// for the allocation and the fold.
constexpr std::uint32_t kShardAfterHandoffs = 64;
constexpr std::uint32_t kNeverShard = std::numeric_limits<std::uint32_t>::max() / 2;

[[noreturn]] void negative_wait_group(std::int64_t count) {
  std::fprintf(stderr,
               "weft::WaitGroup: negative counter (%lld): done() called more often than add()\n",
               static_cast<long long>(count));
  std::abort();
}
}  // namespace

WaitGroup::~WaitGroup() {
  detail::WaitShards* shards = shards_.load(std::memory_order_acquire);
  if (!shards) return;
  // Never waited on: fold anyway, so that a negative count is still reported.
  if (state_.load(std::memory_order_acquire) & kShardedBit) fold_shards();
  delete shards;
}

void WaitGroup::add(int delta) {
  if (detail::WaitShards* shards = shards_.load(std::memory_order_acquire)) {
    if (!shards->closed.load(std::memory_order_relaxed)) {
      if (const int w = worker_index(); w >= 0) {
        // No division on this path: the index is below the count unless the
        // group outlived a runtime with fewer workers.
        const auto i = static_cast<std::uint32_t>(w);
        auto& shard = shards->shards[i < shards->count ? i : i % shards->count].delta;
        if (shard.fetch_add(delta, std::memory_order_acq_rel) > kShardClosed / 2) return;
        // Closed under us: the fold did not count this delta; the word will.
      }
    }
  } else {
    note_worker();  // before touching the word: a released waiter may destroy us after
    if (shards_.load(std::memory_order_relaxed)) return add(delta);
  }
  add_to_word(delta);
}

void WaitGroup::note_worker() {
  const int w = worker_index();
  if (w < 0 || last_worker_.load(std::memory_order_relaxed) == w) return;
  last_worker_.store(w, std::memory_order_relaxed);
  // An atomic increment: with a load and a store, two workers handing the
  // word back and forth lost and rewound each other's counts, and a group
  // could go a million handoffs without sharding. Only handoffs pay it, on a
  // line the add() that follows takes anyway.
  if (handoffs_.fetch_add(1, std::memory_order_relaxed) + 1 == kShardAfterHandoffs) {
    start_sharding();
  }
}

bool WaitGroup::start_sharding() {
  const int workers = num_workers();
  if (workers < 2) {
    handoffs_.store(kNeverShard, std::memory_order_relaxed);
    return false;
  }
  auto shards = std::make_unique<detail::WaitShards>(workers);
  std::uint64_t s = state_.load(std::memory_order_relaxed);
  do {
    // A waiter counted on the word must be released by it: no sharding then
    // (try again after as many handoffs).
    if ((s & (kWaiterMask | kShardedBit)) != 0) {
      handoffs_.store(0, std::memory_order_relaxed);
      return false;
    }
  } while (!state_.compare_exchange_weak(s, s | kShardedBit, std::memory_order_acq_rel));
  // From the bit on, waiters fold before they count themselves; they spin
  // for the pointer if they come between the two stores.
  shards_.store(shards.release(), std::memory_order_release);
  return true;
}

void WaitGroup::fold_shards() {
  detail::WaitShards* shards = nullptr;
  while (!(shards = shards_.load(std::memory_order_acquire))) detail::cpu_relax();
  if (shards->closed.exchange(true, std::memory_order_acq_rel)) {
    // Another waiter folds; its last step clears the bit.
    while (state_.load(std::memory_order_acquire) & kShardedBit) weft::yield();
    return;
  }
  std::int64_t sum = 0;
  for (std::uint32_t i = 0; i < shards->count; ++i) {
    sum += shards->shards[i].delta.exchange(kShardClosed, std::memory_order_acq_rel);
  }
  // Add the sum and clear the bit in one step. Deltas that reached the word
  // meanwhile (shards already closed) were not checked; this is their check.
  const std::uint64_t step = (static_cast<std::uint64_t>(sum) << 32) - kShardedBit;
  const std::uint64_t s = state_.fetch_add(step, std::memory_order_acq_rel) + step;
  const auto count = static_cast<std::int32_t>(s >> 32);
  if (count < 0) negative_wait_group(count);
  // Nobody could count itself as a waiter while the bit was set, so a zero
  // here has nobody to release.
}

void WaitGroup::add_to_word(int delta) {
  const std::uint64_t step = static_cast<std::uint64_t>(static_cast<std::int64_t>(delta)) << 32;
  const std::uint64_t s = state_.fetch_add(step, std::memory_order_acq_rel) + step;
  // Sharded: the word holds only part of the count, and nobody waits.
  if (s & kShardedBit) return;
  const auto count = static_cast<std::int32_t>(s >> 32);
  const auto waiters = static_cast<std::uint32_t>(s & kWaiterMask);
  if (count < 0) negative_wait_group(count);
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
    if (s & kShardedBit) {
      fold_shards();
      s = state_.load(std::memory_order_acquire);
      continue;
    }
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
  w.waiter.wait(detail::WaitReason::wait_group);
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
      charge_or_wake(peer);
      cases[i]->run(ok != 0);
      return i;
    }
  }
  if (default_index >= 0) {
    unlock_all();
    coop_spend(kCoopChannelOp);  // a polling loop of selects must let others run too
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
  // select{} with no cases parks forever, as in Go.
  group.waiter.wait(active == 0 ? WaitReason::select_no_cases : WaitReason::select);

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
