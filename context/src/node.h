// The nodes behind weft::Context (internal to context/): what every context
// shares with its parent, the cancel node (Go's cancelCtx and timerCtx in
// one), and the node of a context the user implemented (custom.cc).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <stop_token>

#include "block_pool.h"
#include "chaos.h"
#include "prefetch.h"
#include "sanitizer.h"
#include "weft/context.h"
#include "weft/detail/spinlock.h"
#include "weft/detail/timer_node.h"
#include "weft/runtime.h"

namespace weft::detail {

class CancelNode;

enum class NodeKind : std::uint8_t { background, todo, cancel, value, without_cancel, custom };

class ContextNode {
 public:
  ContextNode(NodeKind k, std::shared_ptr<const ContextNode> p) : kind(k), parent(std::move(p)) {
    if (parent && kind != NodeKind::without_cancel) {
      canceler = parent->canceler;
      custom_source = parent->custom_source;
      deadline_ns = parent->deadline_ns;
    }
  }
  virtual ~ContextNode() = default;

  const NodeKind kind;
  // Values and deadlines are looked up through the parent; it stays alive as
  // long as any descendant does.
  const std::shared_ptr<const ContextNode> parent;
  // Where done and err come from: the innermost cancelable context, either
  // a weft one (canceler) or one the user implemented (custom_source, whose
  // impl answers); both null for contexts that are never done.
  CancelNode* canceler = nullptr;
  const ContextNode* custom_source = nullptr;
  // Empty: no deadline. Not a sentinel value: every instant, the clock's
  // epoch (where a zero would put it) included, can be a deadline. A user's
  // context is asked once: Go's contract has Deadline answer the same on
  // every call.
  std::optional<std::int64_t> deadline_ns;
  // kind == value
  const void* key = nullptr;
  const char* key_name = nullptr;
  std::shared_ptr<const void> value;
  // kind == custom
  std::shared_ptr<const ContextImpl> impl;
};

// The key under which a weft cancel node answers value() with itself (Go's
// &cancelCtxKey): how a user's context that wraps one is found out.
const void* cancel_node_key() noexcept;

// Where cancel nodes come from (context.cc): for tests that check that a
// node freed on another thread goes back to a pool, not to malloc.
BlockPoolStats cancel_node_pool_stats() noexcept;

// The error a child takes from a done parent it did not make: Go's contract
// allows only these two.
int errc_of(const std::error_code& parent_err) noexcept;

class CancelNode;
// The weft cancel node a DoneHook or after_func registration links to for
// ctx: its own, or the one a user's context wraps (custom.cc); null if
// there is none.
CancelNode* hook_canceler(const Context& ctx) noexcept;
// Whether ctx is a user's context that can be done but offers no weft node
// to link to: a DoneHook or after_func registration then links to a child
// of it (paths d and e in custom.cc), kept while it may run.
bool needs_bridge(const Context& ctx) noexcept;

class CancelNode final : public ContextNode, public DoneSignal, public ChildLink {
 public:
  explicit CancelNode(std::shared_ptr<const ContextNode> p)
      : ContextNode(NodeKind::cancel, std::move(p)) {
    parent_canceler_ = canceler;  // as the base set it: the parent's
    parent_custom_ = custom_source;
    canceler = this;
    custom_source = nullptr;
    waits_for_release = true;  // see notify_child
  }

  ~CancelNode() override {
    stop_bridge_.reset();  // its callback may be cancelling us: waits for it
    if (timer_armed_) {
      // A fire in progress still runs cancel() on this node: wait it out.
      stop_timer_and_wait(&timer_);
    }
    detach_from_parent();
    // Children hold this node alive, so only after_func registrations remain.
    lock.lock();
    while (ChildLink* c = children_) {
      notify_child(c, 0, {});  // err 0: never done; the registration just lets go
    }
    lock.unlock();
  }

  // Registers `child` (a new context or an after_func) unless this node is
  // already done; then returns the error and cause to cancel it with.
  int link_child(ChildLink* child, std::error_code* cause) {
    lock.lock();
    const int e = err.load(std::memory_order_relaxed);
    if (e != 0) {
      *cause = cause_;
    } else {
      child->prev = nullptr;
      child->next = children_;
      if (children_) children_->prev = child;
      children_ = child;
      child->linked = true;
      ++child_count_;
    }
    lock.unlock();
    return e;
  }

  void unlink_child_locked(ChildLink* c) {
    if (c->linked) unlink_child(c);
  }

  // Go's propagateCancel. `self` owns this node.
  void register_with_parent(const std::shared_ptr<CancelNode>& self) {
    if (parent_custom_) {
      register_with_custom_parent(self);  // custom.cc
      return;
    }
    if (!parent_canceler_) return;
    std::error_code parent_cause;
    const int e = parent_canceler_->link_child(this, &parent_cause);
    if (e != 0) cancel(false, e, parent_cause);  // born done
  }

  void arm_deadline(std::int64_t when, std::error_code cause) {
    lock.lock();
    if (err.load(std::memory_order_relaxed) == 0) {
      deadline_cause_ = cause;
      timer_.fire = &CancelNode::on_deadline;
      timer_.context = this;
      timer_armed_ = true;
      add_timer(&timer_, when);
    }
    lock.unlock();
  }

  // Go's cancelCtx.cancel: the first call sets err and cause, wakes every
  // done() waiter and cancels every child before it returns.
  void cancel(bool remove_from_parent, int e, std::error_code cause) noexcept {
    chaos::at(chaos::Point::cancel);
    // Every fiber this wakes, in this node and all its descendants, is
    // scheduled when the outermost cancel returns, or in slices between its
    // children: never while a woken fiber's node is still being notified
    // (its lock held, its release not yet stored), where it would spin.
    ReadyBatch batch(ReadyBatch::Stepped{});
    if (!cause) cause = make_error_code(static_cast<errc>(e));
    lock.lock();
    if (err.load(std::memory_order_relaxed) != 0) {
      lock.unlock();
      return;
    }
    cause_ = cause;
    err.store(e, std::memory_order_release);
    while (ChanWaiter* w = waiters.pop_claimed()) {
      w->ok = true;
      w->wake();
    }
    while (ChildLink* c = children_) {
      prefetch_ahead(c);
      notify_child(c, e, cause);
      batch.step_done();
    }
    const bool timer_was_armed = timer_armed_;
    lock.unlock();
    if (timer_was_armed) stop_timer(&timer_);  // false when this is the timer firing
    if (remove_from_parent) detach_from_parent();
  }

  void parent_done(int e, const std::error_code& cause) noexcept override {
    cancel(false, e, cause);
  }

  std::error_code cause() {
    lock.lock();
    std::error_code c = cause_;
    lock.unlock();
    return c;
  }

  std::size_t child_count() {
    lock.lock();
    const std::size_t n = child_count_;
    lock.unlock();
    return n;
  }

  // with_stop_token: cancels this node when the token's stop is requested.
  void bridge_stop_token(const std::shared_ptr<CancelNode>& self, std::stop_token token);

 private:
  static void on_deadline(void* self, std::uint64_t) {
    auto* node = static_cast<CancelNode*>(self);
    node->cancel(true, static_cast<int>(errc::deadline_exceeded), node->deadline_cause_);
  }

  // ChildLink::parent_state: linked (or never linked), the parent is inside
  // the child's parent_done, the parent will not touch the child again.
  static constexpr std::uint8_t kParentLinked = 0, kParentNotifying = 1, kParentReleased = 2;

  // Under lock: unlinks c and tells it. A done hook or an after_func
  // registration may be gone once parent_done() returns (a registration
  // drops its last reference there), so it is not touched after. A child
  // context waits for the release store, the last touch of it: from then
  // on it may be destroyed (detach_from_parent's acquire load is its
  // partner) while this walk goes on over its siblings.
  void notify_child(ChildLink* c, int e, const std::error_code& cause) {
    unlink_child(c);
    if (!c->waits_for_release) {
      c->parent_done(e, cause);
      return;
    }
    c->parent_state.store(kParentNotifying, std::memory_order_relaxed);
    c->parent_done(e, cause);
    c->parent_state.store(kParentReleased, std::memory_order_release);
  }

  // A walk over the children a thousand parked readers made is a chain of
  // loads of lines last written on the other core (each child's node, then
  // the done hook on its reader's stack): about 120 ns a child with two
  // workers, most of it waiting. While child c is notified, this fetches
  // the child after next, and the next one's first child (the next one's
  // lines were fetched one step ago), so that the walk finds them here.
  // The next child's link is written by c's unlink anyway.
  static void prefetch_ahead(const ChildLink* c) noexcept {
    const ChildLink* next = c->next;
    if (!next) return;
    if (const ChildLink* after = next->next) {
      // A child context's walk touches its done signal, just before its
      // link, and children_, cause_ and timer_armed_, within 192 bytes
      // after it. (A hook is smaller: the extra lines cost nothing but the
      // fetch.)
      const char* link = reinterpret_cast<const char*>(after);
      prefetch_lines_for_write(link - 64, link + 192);
    }
#ifndef WEFT_TSAN
    // Only a child context has children (waits_for_release marks it). Its
    // children_ is read without its lock, as a hint: TSan would call that
    // a race.
    if (next->waits_for_release) {
      const auto* node = static_cast<const CancelNode*>(next);
      if (const ChildLink* first = __atomic_load_n(&node->children_, __ATOMIC_RELAXED)) {
        prefetch_lines_for_write(first, reinterpret_cast<const char*>(first) + 63);
      }
    }
#endif
  }

  void unlink_child(ChildLink* c) {
    (c->prev ? c->prev->next : children_) = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = nullptr;
    c->linked = false;
    --child_count_;
  }

  // Go's removeChild, or the stop of an after_func registration with a
  // user's context (C-10). Runs once: after cancel, and at destruction.
  void detach_from_parent() {
    if (parent_canceler_) {
      // The parent cancelled us and is done with us: nothing to unlink, and
      // its lock, held for its whole walk over our siblings (milliseconds
      // for 10,000 of them), is not needed. Go's cancel of a child already
      // cancelled returns before removeChild for the same reason. acquire:
      // pairs with notify_child's release store, its last touch of us.
      std::uint8_t state = parent_state.load(std::memory_order_acquire);
      if (state == kParentNotifying) {
        // Woken by the very cancel the parent is still running on us
        // (another thread: a walk never switches, so it is not on this
        // one): it is about to let go of us.
        unsigned spins = 0;
        while ((state = parent_state.load(std::memory_order_acquire)) == kParentNotifying) {
          spin_backoff(spins);
        }
      }
      if (state == kParentReleased) return;
      parent_canceler_->lock.lock();
      parent_canceler_->unlink_child_locked(this);
      parent_canceler_->lock.unlock();
      return;
    }
    std::function<bool()> stop;
    lock.lock();
    stop.swap(parent_stop_);
    lock.unlock();
    if (stop) stop();
  }

  void register_with_custom_parent(const std::shared_ptr<CancelNode>& self);

  CancelNode* parent_canceler_ = nullptr;
  const ContextNode* parent_custom_ = nullptr;
  std::function<bool()> parent_stop_;  // under lock: the user's after_func stop
  std::error_code cause_;              // under lock, set with err
  ChildLink* children_ = nullptr;
  std::size_t child_count_ = 0;
  TimerNode timer_;
  bool timer_armed_ = false;  // under lock
  std::error_code deadline_cause_;
  struct StopRequested {
    std::weak_ptr<CancelNode> node;
    void operator()() const noexcept;
  };
  std::optional<std::stop_callback<StopRequested>> stop_bridge_;
};

// Builds a Context around a node (ContextAccess, for the files of context/).
inline Context context_of(std::shared_ptr<const ContextNode> node) noexcept {
  return ContextAccess::make_context(std::move(node));
}

}  // namespace weft::detail
