#include "weft/semaphore.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>

#include "weft/detail/wait_queue.h"
#include "weft/error.h"

namespace weft {

namespace detail {
// One parked acquire, on its caller's stack until it is woken and, with a
// context, until its DoneHook is detached (the hook reaches it through arg).
struct SemaphoreWaiter {
  SemaphoreWaiter(Semaphore* owner, std::int64_t n) noexcept : semaphore(owner), weight(n) {}
  Semaphore* const semaphore;
  const std::int64_t weight;
  SemaphoreWaiter* prev = nullptr;
  SemaphoreWaiter* next = nullptr;  // in the queue, then in the chain to wake
  bool queued = false;              // under the semaphore's lock
  // Under the semaphore's lock; the owner reads it after its wake-up, which
  // the Waiter orders after the write.
  bool granted = false;
  Waiter waiter;
};
}  // namespace detail

namespace {

using detail::SemaphoreWaiter;

[[noreturn]] void semaphore_misuse(const char* what, std::int64_t n) {
  std::fprintf(stderr, "weft::Semaphore: %s (%lld)\n", what, static_cast<long long>(n));
  std::abort();
}

void check_weight(std::int64_t n) noexcept {
  if (n < 0) semaphore_misuse("negative weight", n);
}

// Wakes a chain from grant_locked (the next link is read before each wake:
// the woken may return and its frame go at once).
void wake_chain(SemaphoreWaiter* w) noexcept {
  while (w) {
    SemaphoreWaiter* next = w->next;
    w->waiter.wake();
    w = next;
  }
}

}  // namespace

Semaphore::Semaphore(std::int64_t size) noexcept : size_(size < 0 ? 0 : size) {}

bool Semaphore::take_locked(std::int64_t n) noexcept {
  // Nobody may overtake a queued waiter, or big requests would starve.
  if (head_ || size_ - held_ < n) return false;
  held_ += n;
  return true;
}

SemaphoreWaiter* Semaphore::grant_locked() noexcept {
  SemaphoreWaiter* first = nullptr;
  SemaphoreWaiter* last = nullptr;
  // Stop at the first that does not fit, even if one behind it would: it
  // keeps its turn until enough comes back.
  while (head_ && size_ - held_ >= head_->weight) {
    SemaphoreWaiter* w = head_;
    head_ = w->next;
    (head_ ? head_->prev : tail_) = nullptr;
    w->queued = false;
    w->granted = true;
    held_ += w->weight;
    w->next = nullptr;
    (last ? last->next : first) = w;
    last = w;
  }
  return first;
}

bool Semaphore::try_acquire(std::int64_t n) noexcept {
  check_weight(n);
  std::lock_guard guard(lock_);
  return take_locked(n);
}

std::error_code Semaphore::acquire(std::int64_t n) {
  check_weight(n);
  return wait(nullptr, n);
}

std::error_code Semaphore::acquire(const Context& ctx, std::int64_t n) {
  check_weight(n);
  return wait(&ctx, n);
}

void Semaphore::release(std::int64_t n) noexcept {
  check_weight(n);
  SemaphoreWaiter* woken;
  {
    std::lock_guard guard(lock_);
    held_ -= n;
    if (held_ < 0) semaphore_misuse("released more than held", held_);
    woken = grant_locked();
  }
  // Unlocking was the last access to *this: a woken waiter may destroy the
  // semaphore as soon as it runs.
  wake_chain(woken);
}

std::error_code Semaphore::wait(const Context* ctx, std::int64_t n) {
  if (n > size_) return make_error_code(errc::exceeds_semaphore_size);
  // Go's order: a context already done fails even when the weight is free.
  if (ctx) {
    if (std::error_code e = ctx->err()) return e;
  }
  {
    std::lock_guard guard(lock_);
    if (take_locked(n)) return {};
  }
  const bool cancelable = ctx && ctx->done();
  // Built before the waiter is queued, as it may allocate (and so throw): a
  // user's context needs a weft child to hook into.
  std::optional<detail::HookTarget> target;
  if (cancelable) target.emplace(*ctx);

  SemaphoreWaiter w(this, n);
  {
    std::lock_guard guard(lock_);
    if (take_locked(n)) return {};
    w.prev = tail_;
    (tail_ ? tail_->next : head_) = &w;
    tail_ = &w;
    w.queued = true;
  }
  if (!cancelable) {
    w.waiter.wait(detail::WaitReason::semaphore_acquire);
    return {};
  }
  // The hook is linked after the waiter is queued, so a cancel always finds
  // it either queued (and withdraws it) or granted (and leaves it be).
  detail::DoneHook hook(&Semaphore::on_done, &w);
  const bool attached = !detail::attach_done_hook(target->ctx(), &hook);
  if (!attached) on_done(&w);  // done in between: withdraw it here
  w.waiter.wait(detail::WaitReason::semaphore_acquire);
  // Takes the lock the hook runs under: once it returns, a hook that fired
  // has finished with `w`.
  if (attached) detail::detach_done_hook(target->ctx(), &hook);
  if (!w.granted) return ctx->err();
  if (std::error_code e = ctx->err()) {
    // Granted as ctx ended: the done context wins, as in Go; the weight goes
    // to whoever waits next.
    release(n);
    return e;
  }
  return {};
}

// The DoneHook: runs inside the context's cancel, under its lock, so the
// waiter's owner, parked or about to detach the hook, cannot leave meanwhile.
void Semaphore::on_done(void* arg) noexcept {
  auto* w = static_cast<SemaphoreWaiter*>(arg);
  Semaphore& s = *w->semaphore;
  SemaphoreWaiter* woken = nullptr;
  {
    std::lock_guard guard(s.lock_);
    // Granted already: the release that did it wakes it.
    if (!w->queued) return;
    const bool was_head = s.head_ == w;
    (w->prev ? w->prev->next : s.head_) = w->next;
    (w->next ? w->next->prev : s.tail_) = w->prev;
    w->queued = false;
    // A head that did not fit held back those behind it; some may fit now.
    if (was_head) woken = s.grant_locked();
  }
  w->waiter.wake();
  wake_chain(woken);
}

}  // namespace weft
