#include "weft/context.h"

#include <limits>

#include "chaos.h"
#include "weft/detail/saturate.h"
#include "weft/detail/timer_node.h"
#include "weft/runtime.h"

namespace weft {
namespace detail {

class CancelNode;

enum class NodeKind : std::uint8_t { background, todo, cancel, value, without_cancel };

class ContextNode {
 public:
  ContextNode(NodeKind k, std::shared_ptr<const ContextNode> p) : kind(k), parent(std::move(p)) {
    if (parent && kind != NodeKind::without_cancel) {
      canceler = parent->canceler;
      deadline_ns = parent->deadline_ns;
    }
  }
  virtual ~ContextNode() = default;

  const NodeKind kind;
  // Values and deadlines are looked up through the parent; it stays alive as
  // long as any descendant does.
  const std::shared_ptr<const ContextNode> parent;
  // The innermost cancelable context whose done/err this one shares; null
  // for contexts that are never done.
  CancelNode* canceler = nullptr;
  // Empty: no deadline. Not a sentinel value: every instant, the clock's
  // epoch (where a zero would put it) included, can be a deadline.
  std::optional<std::int64_t> deadline_ns;
  // kind == value
  const void* key = nullptr;
  const char* key_name = nullptr;
  std::shared_ptr<const void> value;
};

class CancelNode final : public ContextNode, public DoneSignal, public ChildLink {
 public:
  explicit CancelNode(std::shared_ptr<const ContextNode> p)
      : ContextNode(NodeKind::cancel, std::move(p)) {
    parent_canceler_ = canceler;  // as the base set it: the parent's
    canceler = this;
  }

  ~CancelNode() override {
    if (timer_armed_) {
      // A fire in progress still runs cancel() on this node: wait it out.
      stop_timer_and_wait(&timer_);
    }
    detach_from_parent();
    // Children hold this node alive, so only after_func registrations remain.
    lock.lock();
    while (ChildLink* c = children_) {
      unlink_child(c);
      c->parent_done(0, {});  // err 0: never done; the registration just lets go
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

  void register_with_parent() {
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
    // scheduled in one go when the outermost cancel returns.
    ReadyBatch batch;
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
      unlink_child(c);
      c->parent_done(e, cause);
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

 private:
  static void on_deadline(void* self, std::uint64_t) {
    auto* node = static_cast<CancelNode*>(self);
    node->cancel(true, static_cast<int>(errc::deadline_exceeded), node->deadline_cause_);
  }

  void unlink_child(ChildLink* c) {
    (c->prev ? c->prev->next : children_) = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = nullptr;
    c->linked = false;
    --child_count_;
  }

  void detach_from_parent() {
    if (!parent_canceler_) return;
    parent_canceler_->lock.lock();
    parent_canceler_->unlink_child_locked(this);
    parent_canceler_->lock.unlock();
  }

  CancelNode* parent_canceler_ = nullptr;
  std::error_code cause_;  // under lock, set with err
  ChildLink* children_ = nullptr;
  std::size_t child_count_ = 0;
  TimerNode timer_;
  bool timer_armed_ = false;  // under lock
  std::error_code deadline_cause_;
};

namespace {

std::shared_ptr<const ContextNode> static_root(NodeKind kind) {
  static const ContextNode background_node(NodeKind::background, nullptr);
  static const ContextNode todo_node(NodeKind::todo, nullptr);
  // Aliasing an empty owner: copies of a root never touch a reference count.
  return std::shared_ptr<const ContextNode>(
      std::shared_ptr<const ContextNode>(),
      kind == NodeKind::background ? &background_node : &todo_node);
}

std::error_code to_error(int e) {
  return e == 0 ? std::error_code{} : make_error_code(static_cast<errc>(e));
}

std::int64_t to_mono_ns(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

}  // namespace detail

using detail::CancelNode;
using detail::ContextNode;
using detail::NodeKind;

// ---- Context ---------------------------------------------------------------

Context::Context() noexcept : node_(detail::static_root(NodeKind::background)) {}

Context background() noexcept {
  return Context();
}

Context todo() noexcept {
  return detail::ContextAccess::make_context(detail::static_root(NodeKind::todo));
}

std::optional<Clock::time_point> Context::deadline() const noexcept {
  if (!node_->deadline_ns) return std::nullopt;
  return Clock::time_point(std::chrono::nanoseconds(*node_->deadline_ns));
}

std::error_code Context::err() const noexcept {
  const CancelNode* c = node_->canceler;
  return c ? detail::to_error(c->err.load(std::memory_order_acquire)) : std::error_code{};
}

detail::DoneSignal* Context::signal() const noexcept {
  return node_->canceler;
}

Done Context::done() const noexcept {
  return Done(node_, node_->canceler);
}

const void* Context::find_value(const void* key) const noexcept {
  for (const ContextNode* n = node_.get(); n; n = n->parent.get()) {
    if (n->kind == NodeKind::value && n->key == key) return n->value.get();
  }
  return nullptr;
}

std::string Context::to_string() const {
  const ContextNode* n = node_.get();
  switch (n->kind) {
    case NodeKind::background:
      return "context.Background";
    case NodeKind::todo:
      return "context.TODO";
    default:
      break;
  }
  const std::string parent = Context(n->parent).to_string();
  switch (n->kind) {
    case NodeKind::value:
      return parent + ".WithValue(" + n->key_name + ")";
    case NodeKind::without_cancel:
      return parent + ".WithoutCancel";
    default:
      break;
  }
  if (n->deadline_ns && n->deadline_ns != n->parent->deadline_ns) {
    std::int64_t remaining;
    // A deadline near the clock's ends (time_point::min()) is far enough in
    // the past to overflow the difference.
    if (__builtin_sub_overflow(*n->deadline_ns, detail::to_mono_ns(Clock::now()), &remaining)) {
      remaining = std::numeric_limits<std::int64_t>::min();
    }
    return parent + ".WithDeadline([" + std::to_string(remaining / 1000) + "us])";
  }
  return parent + ".WithCancel";
}

void Done::wait() const {
  if (!signal_) {
    detail::Waiter never;  // Go's receive from a nil channel
    never.wait(detail::WaitReason::chan_receive_nil);
    return;
  }
  if (ready()) return;
  signal_->lock.lock();
  if (signal_->err.load(std::memory_order_relaxed) != 0) {
    signal_->lock.unlock();
    return;
  }
  detail::ChanWaiter me;
  signal_->waiters.push_back(&me);
  detail::park_on_channel(&me, &signal_->lock, detail::WaitReason::context_done);
}

// ---- cancel handles --------------------------------------------------------

namespace {

void cancel_node(const std::shared_ptr<ContextNode>& node, std::error_code cause) {
  if (!node) return;
  // Only cancel nodes are handed out with a cancel function.
  static_cast<CancelNode*>(node.get())->cancel(true, static_cast<int>(errc::canceled), cause);
}

}  // namespace

CancelFunc& CancelFunc::operator=(CancelFunc&& other) noexcept {
  if (this != &other) {
    cancel_node(node_, {});
    node_ = std::move(other.node_);
  }
  return *this;
}
CancelFunc::~CancelFunc() {
  cancel_node(node_, {});
}
void CancelFunc::operator()() const noexcept {
  cancel_node(node_, {});
}

CancelCauseFunc& CancelCauseFunc::operator=(CancelCauseFunc&& other) noexcept {
  if (this != &other) {
    cancel_node(node_, {});
    node_ = std::move(other.node_);
  }
  return *this;
}
CancelCauseFunc::~CancelCauseFunc() {
  cancel_node(node_, {});
}
void CancelCauseFunc::operator()(std::error_code cause) const noexcept {
  cancel_node(node_, cause);
}

// ---- derivation ------------------------------------------------------------

namespace {

std::shared_ptr<CancelNode> new_cancel_node(const Context& parent) {
  auto node = std::make_shared<CancelNode>(detail::ContextAccess::node(parent));
  node->register_with_parent();
  return node;
}

}  // namespace

WithCancelResult<CancelFunc> with_cancel(const Context& parent) {
  auto node = new_cancel_node(parent);
  return {detail::ContextAccess::make_context(node), detail::ContextAccess::make_cancel(node)};
}

WithCancelResult<CancelCauseFunc> with_cancel_cause(const Context& parent) {
  auto node = new_cancel_node(parent);
  return {detail::ContextAccess::make_context(node),
          detail::ContextAccess::make_cancel_cause(node)};
}

WithCancelResult<CancelFunc> with_deadline_cause(const Context& parent, Clock::time_point deadline,
                                                 std::error_code cause) {
  const std::int64_t when = detail::to_mono_ns(deadline);
  const auto parent_deadline = detail::ContextAccess::node(parent)->deadline_ns;
  if (parent_deadline && *parent_deadline < when) return with_cancel(parent);
  // The deadline is set before registering: a child born done must still
  // report it.
  auto node = std::make_shared<CancelNode>(detail::ContextAccess::node(parent));
  node->deadline_ns = when;
  node->register_with_parent();
  if (when <= detail::mono_now_ns()) {
    node->cancel(true, static_cast<int>(errc::deadline_exceeded), cause);
  } else {
    node->arm_deadline(when, cause);
  }
  return {detail::ContextAccess::make_context(node), detail::ContextAccess::make_cancel(node)};
}

WithCancelResult<CancelFunc> with_deadline(const Context& parent, Clock::time_point deadline) {
  return with_deadline_cause(parent, deadline, {});
}

WithCancelResult<CancelFunc> with_timeout(const Context& parent, Clock::duration timeout) {
  return with_deadline_cause(parent, detail::add_saturated(Clock::now(), timeout), {});
}

WithCancelResult<CancelFunc> with_timeout_cause(const Context& parent, Clock::duration timeout,
                                                std::error_code cause) {
  return with_deadline_cause(parent, detail::add_saturated(Clock::now(), timeout), cause);
}

Context detail::with_value_erased(const Context& parent, const void* key, const char* key_name,
                                  std::shared_ptr<const void> value) {
  auto node = std::make_shared<ContextNode>(NodeKind::value, ContextAccess::node(parent));
  node->key = key;
  node->key_name = key_name;
  node->value = std::move(value);
  return ContextAccess::make_context(std::move(node));
}

Context without_cancel(const Context& parent) {
  return detail::ContextAccess::make_context(
      std::make_shared<ContextNode>(NodeKind::without_cancel, detail::ContextAccess::node(parent)));
}

std::error_code cause(const Context& ctx) noexcept {
  CancelNode* c = detail::ContextAccess::node(ctx)->canceler;
  if (!c) return {};
  if (std::error_code inner = c->cause()) return inner;
  return ctx.err();
}

std::size_t detail::child_count(const Context& ctx) noexcept {
  CancelNode* c = ContextAccess::node(ctx)->canceler;
  return c ? c->child_count() : 0;
}

std::error_code detail::attach_done_hook(const Context& ctx, DoneHook* hook) noexcept {
  CancelNode* c = ContextAccess::node(ctx)->canceler;
  if (!c) return {};
  std::error_code unused;
  return to_error(c->link_child(hook, &unused));
}

bool detail::detach_done_hook(const Context& ctx, DoneHook* hook) noexcept {
  CancelNode* c = ContextAccess::node(ctx)->canceler;
  if (!c) return true;
  // Under the lock: a cancel running the hook holds it until the hook is done.
  c->lock.lock();
  const bool was_linked = hook->linked;
  c->unlink_child_locked(hook);
  c->lock.unlock();
  return was_linked;
}

// ---- after_func ------------------------------------------------------------

struct AfterFuncStop::Registration final : detail::ChildLink {
  static constexpr int kArmed = 0, kRan = 1, kStopped = 2;
  std::atomic<int> state{kArmed};
  std::function<void()> fn;
  // Weak: an after_func must not keep a context alive that nothing else
  // can cancel any more.
  std::weak_ptr<const ContextNode> owner;
  CancelNode* canceler = nullptr;
  std::shared_ptr<Registration> self;  // while linked in canceler's children

  void run() {
    int armed = kArmed;
    if (state.compare_exchange_strong(armed, kRan, std::memory_order_acq_rel)) {
      weft::go([f = std::move(fn)] { f(); });
    }
  }

  void parent_done(int e, const std::error_code&) noexcept override {
    std::shared_ptr<Registration> keep = std::move(self);  // may be the last reference
    if (e != 0) run();
  }
};

AfterFuncStop after_func(const Context& ctx, std::function<void()> fn) {
  auto reg = std::make_shared<AfterFuncStop::Registration>();
  reg->fn = std::move(fn);
  const auto& node = detail::ContextAccess::node(ctx);
  reg->owner = node;
  reg->canceler = node->canceler;
  if (reg->canceler) {
    reg->self = reg;
    std::error_code unused;
    if (reg->canceler->link_child(reg.get(), &unused) != 0) {
      reg->self.reset();
      reg->run();  // already done: start fn at once, still in its own fiber
    }
  }
  return AfterFuncStop(std::move(reg));
}

bool AfterFuncStop::operator()() const noexcept {
  if (!reg_) return false;
  int armed = Registration::kArmed;
  if (!reg_->state.compare_exchange_strong(armed, Registration::kStopped,
                                           std::memory_order_acq_rel)) {
    return false;
  }
  // Unregister (Go: the registration counts as a child until stopped).
  if (auto owner = reg_->owner.lock()) {
    CancelNode* c = reg_->canceler;
    std::shared_ptr<Registration> keep;
    c->lock.lock();
    if (reg_->linked) {
      c->unlink_child_locked(reg_.get());
      keep = std::move(reg_->self);
    }
    c->lock.unlock();
  }
  return true;
}

}  // namespace weft
