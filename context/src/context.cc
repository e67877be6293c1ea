#include "weft/context.h"

#include <limits>

#include "block_pool.h"
#include "node.h"
#include "weft/detail/saturate.h"

namespace weft {
namespace detail {

const void* cancel_node_key() noexcept {
  static const char key = 0;
  return &key;
}

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
  if (const CancelNode* c = node_->canceler) {
    return detail::to_error(c->err.load(std::memory_order_acquire));
  }
  if (const ContextNode* custom = node_->custom_source) return custom->impl->err();
  return {};
}

detail::DoneSignal* Context::signal() const noexcept {
  if (node_->canceler) return node_->canceler;
  if (const ContextNode* custom = node_->custom_source) {
    return detail::ContextAccess::signal(custom->impl->done());
  }
  return nullptr;
}

Done Context::done() const noexcept {
  if (const ContextNode* custom = node_->custom_source) return custom->impl->done();
  return Done(node_, node_->canceler);
}

// Go's value(): a weft cancel node answers the cancel-node key with itself,
// WithoutCancel hides it, and a user's context answers for everything above
// it.
const void* Context::find_value(const void* key) const noexcept {
  const bool cancel_key = key == detail::cancel_node_key();
  for (const ContextNode* n = node_.get(); n; n = n->parent.get()) {
    switch (n->kind) {
      case NodeKind::cancel:
        if (cancel_key) return static_cast<const CancelNode*>(n);
        break;
      case NodeKind::value:
        if (n->key == key) return n->value.get();
        break;
      case NodeKind::without_cancel:
        if (cancel_key) return nullptr;
        break;
      case NodeKind::custom:
        return n->impl->value(key);
      case NodeKind::background:
      case NodeKind::todo:
        return nullptr;
    }
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
    case NodeKind::custom:
      return n->impl->name();
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

// Cancel nodes are made per request or per operation, often by a fiber on
// one worker and released on another after it moved: from a pool, so that
// those frees do not meet on malloc's arena locks (block_pool.h). The rest
// of the block holds what std::allocate_shared puts beside the node (a
// vtable pointer, two counts, the allocator); with the pool's link word,
// a block is a whole number of cache lines.
constexpr std::size_t kCancelNodeBlock = (sizeof(CancelNode) + 32 + 63) / 64 * 64 - sizeof(void*);

detail::BlockPool& cancel_node_pool() {
  static auto* pool = new detail::BlockPool(kCancelNodeBlock);  // outlives every thread
  return *pool;
}

std::shared_ptr<CancelNode> make_cancel_node(const Context& parent) {
  return std::allocate_shared<CancelNode>(detail::PoolAllocator<CancelNode>(&cancel_node_pool()),
                                          detail::ContextAccess::node(parent));
}

}  // namespace

detail::BlockPoolStats detail::cancel_node_pool_stats() noexcept {
  return cancel_node_pool().stats();
}

namespace {

std::shared_ptr<CancelNode> new_cancel_node(const Context& parent) {
  auto node = make_cancel_node(parent);
  node->register_with_parent(node);
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
  auto node = make_cancel_node(parent);
  node->deadline_ns = when;
  node->register_with_parent(node);
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

// Go's Cause (C-12): the innermost weft cancel context's cause, found through
// value() (so through users' contexts, and not through WithoutCancel), else
// err().
std::error_code cause(const Context& ctx) noexcept {
  if (const ContextNode* custom = detail::ContextAccess::node(ctx)->custom_source) {
    return custom->impl->cause();
  }
  CancelNode* c = detail::ContextAccess::node(ctx)->canceler;
  if (!c) return {};
  if (std::error_code inner = c->cause()) return inner;
  return ctx.err();
}

std::error_code ContextImpl::cause() const noexcept {
  if (const void* inner = value(detail::cancel_node_key())) {
    auto* c = const_cast<CancelNode*>(static_cast<const CancelNode*>(inner));
    if (std::error_code inner_cause = c->cause()) return inner_cause;
  }
  return err();
}

std::size_t detail::child_count(const Context& ctx) noexcept {
  CancelNode* c = hook_canceler(ctx);
  return c ? c->child_count() : 0;
}

std::error_code detail::attach_done_hook(const Context& ctx, DoneHook* hook) noexcept {
  CancelNode* c = hook_canceler(ctx);
  if (!c) return ctx.err();  // never done, or a user's context already done
  std::error_code unused;
  return to_error(c->link_child(hook, &unused));
}

bool detail::detach_done_hook(const Context& ctx, DoneHook* hook) noexcept {
  CancelNode* c = hook_canceler(ctx);
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
  // For a user's context that is not a weft one: the child of it that this
  // registration links to instead (Go's AfterFunc propagates as a child
  // does), kept until fn runs or is stopped. Under canceler's lock.
  std::shared_ptr<CancelNode> bridge;

  void run() {
    int armed = kArmed;
    if (state.compare_exchange_strong(armed, kRan, std::memory_order_acq_rel)) {
      weft::go([f = std::move(fn)] { f(); });
    }
  }

  void parent_done(int e, const std::error_code&) noexcept override {
    std::shared_ptr<Registration> keep = std::move(self);  // may be the last reference
    // Whoever is cancelling the bridge holds it: not its last reference.
    std::shared_ptr<CancelNode> keep_bridge = std::move(bridge);
    if (e != 0) run();
  }
};

AfterFuncStop after_func(const Context& ctx, std::function<void()> fn) {
  auto reg = std::make_shared<AfterFuncStop::Registration>();
  reg->fn = std::move(fn);
  const auto& node = detail::ContextAccess::node(ctx);
  reg->owner = node;
  reg->canceler = detail::hook_canceler(ctx);
  if (detail::needs_bridge(ctx)) {
    auto bridge = new_cancel_node(ctx);
    reg->owner = bridge;
    reg->canceler = bridge.get();
    reg->bridge = std::move(bridge);
  }
  if (reg->canceler) {
    reg->self = reg;
    std::error_code unused;
    if (reg->canceler->link_child(reg.get(), &unused) != 0) {
      reg->self.reset();
      reg->bridge.reset();
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
    std::shared_ptr<CancelNode> bridge;
    c->lock.lock();
    if (reg_->linked) {
      c->unlink_child_locked(reg_.get());
      keep = std::move(reg_->self);
    }
    bridge = std::move(reg_->bridge);
    c->lock.unlock();
    // Its watcher, if it has one, ends with it.
    if (bridge) bridge->cancel(true, static_cast<int>(errc::canceled), {});
  }
  return true;
}

}  // namespace weft
