// Contexts weft did not make (Go's Context interface, implemented by users),
// what derives from them (Go's propagateCancel, C-9), and the bridges to
// std::stop_token.
//
// A child of a user's context is registered by the first of these that
// applies, in Go's order:
// a) the user's done() is null: the parent is never done; nothing to do;
// b) it is ready: the child is born done with the parent's err and cause;
// c) value(cancel_node_key()) finds a weft cancel node whose Done the user's
//    done() returns (a wrapper that did not replace Done): the child links
//    to that node as to any weft parent, and is cancelled synchronously;
// d) the user offers after_func: the child registers through it, and its
//    stop is called when the child is cancelled (detach_from_parent);
// e) else a watcher fiber per child waits for either to be done, cancels
//    the child if the parent was first, and ends either way.
#include <atomic>
#include <stdexcept>

#include "node.h"
#include "weft/select.h"

namespace weft::detail {

namespace {

std::atomic<std::int64_t> g_watchers_alive{0};
std::atomic<std::uint64_t> g_watchers_started{0};

// (c): the weft cancel node a user's context wraps without replacing its
// Done, the one a child may link to directly.
CancelNode* wrapped_canceler(const ContextNode* custom) noexcept {
  const void* inner = custom->impl->value(cancel_node_key());
  if (!inner) return nullptr;
  auto* c = const_cast<CancelNode*>(static_cast<const CancelNode*>(inner));
  return ContextAccess::signal(custom->impl->done()) == c ? c : nullptr;
}

void start_watcher(Context parent, std::shared_ptr<CancelNode> child) {
  g_watchers_alive.fetch_add(1, std::memory_order_relaxed);
  g_watchers_started.fetch_add(1, std::memory_order_relaxed);
  weft::go([parent = std::move(parent), child = std::move(child)] {
    const Context child_ctx = context_of(child);
    weft::select(
        on_done(parent, [&] { child->cancel(false, errc_of(parent.err()), weft::cause(parent)); }),
        on_done(child_ctx, [] {}));
    g_watchers_alive.fetch_sub(1, std::memory_order_relaxed);
  });
}

}  // namespace

int errc_of(const std::error_code& parent_err) noexcept {
  return static_cast<int>(parent_err == errc::deadline_exceeded ? errc::deadline_exceeded
                                                                : errc::canceled);
}

CancelNode* hook_canceler(const Context& ctx) noexcept {
  const std::shared_ptr<const ContextNode>& node = ContextAccess::node(ctx);
  if (node->canceler) return node->canceler;
  if (node->custom_source) return wrapped_canceler(node->custom_source);
  return nullptr;
}

void CancelNode::register_with_custom_parent(const std::shared_ptr<CancelNode>& self) {
  const ContextNode* custom = parent_custom_;
  const Done parent_done = custom->impl->done();
  if (!parent_done) return;  // (a)
  const Context parent = context_of(this->parent);
  if (parent_done.ready()) {  // (b)
    cancel(false, errc_of(parent.err()), weft::cause(parent));
    return;
  }
  if (CancelNode* inner = wrapped_canceler(custom)) {  // (c)
    parent_canceler_ = inner;
    std::error_code parent_cause;
    const int e = inner->link_child(this, &parent_cause);
    if (e != 0) cancel(false, e, parent_cause);
    return;
  }
  // (d): weak both ways, so that a registration the user keeps holds
  // neither context alive.
  std::weak_ptr<CancelNode> weak_child = self;
  std::weak_ptr<const ContextNode> weak_parent = this->parent;
  std::function<bool()> stop = custom->impl->after_func([weak_child, weak_parent] {
    const std::shared_ptr<CancelNode> child = weak_child.lock();
    const std::shared_ptr<const ContextNode> p = weak_parent.lock();
    if (!child || !p) return;
    const Context parent_ctx = context_of(p);
    child->cancel(false, errc_of(parent_ctx.err()), weft::cause(parent_ctx));
  });
  if (stop) {
    lock.lock();
    // Cancelled already (the user's after_func may run fn at once): its
    // detach found nothing to stop, so stop here.
    const bool done = err.load(std::memory_order_relaxed) != 0;
    if (!done) parent_stop_ = stop;
    lock.unlock();
    if (done) stop();
    return;
  }
  start_watcher(parent, self);  // (e)
}

void CancelNode::StopRequested::operator()() const noexcept {
  if (const std::shared_ptr<CancelNode> n = node.lock()) {
    n->cancel(true, static_cast<int>(errc::canceled), {});
  }
}

void CancelNode::bridge_stop_token(const std::shared_ptr<CancelNode>& self, std::stop_token token) {
  // Runs the callback at once if stop was already requested.
  stop_bridge_.emplace(std::move(token), StopRequested{self});
}

bool needs_bridge(const Context& ctx) noexcept {
  const std::shared_ptr<const ContextNode>& node = ContextAccess::node(ctx);
  return !node->canceler && node->custom_source && node->custom_source->impl->done() &&
         !wrapped_canceler(node->custom_source);
}

HookTarget::HookTarget(const Context& ctx) : ctx_(&ctx) {
  if (needs_bridge(ctx)) bridge_ = std::make_unique<WithCancelResult<CancelFunc>>(with_cancel(ctx));
}

std::int64_t context_watchers_alive() noexcept {
  return g_watchers_alive.load(std::memory_order_relaxed);
}

std::uint64_t context_watchers_started() noexcept {
  return g_watchers_started.load(std::memory_order_relaxed);
}

}  // namespace weft::detail

namespace weft {

Context make_context(std::shared_ptr<const ContextImpl> impl) {
  if (!impl) throw std::invalid_argument("weft::make_context: no implementation (null)");
  auto node = std::make_shared<detail::ContextNode>(detail::NodeKind::custom, nullptr);
  if (const auto d = impl->deadline()) {
    node->deadline_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(d->time_since_epoch()).count();
  }
  node->impl = std::move(impl);
  node->custom_source = node.get();
  return detail::context_of(std::move(node));
}

WithCancelResult<CancelFunc> with_stop_token(const Context& parent, std::stop_token token) {
  auto result = with_cancel(parent);
  if (token.stop_possible()) {
    auto node =
        std::const_pointer_cast<detail::ContextNode>(detail::ContextAccess::node(result.ctx));
    auto cancel_node = std::static_pointer_cast<detail::CancelNode>(node);
    cancel_node->bridge_stop_token(cancel_node, std::move(token));
  }
  return result;
}

std::stop_source stop_source_of(const Context& ctx) {
  std::stop_source source;
  if (ctx.done()) {
    after_func(ctx, [source]() mutable { source.request_stop(); });
  }
  return source;
}

}  // namespace weft
