// Go's context for fibers and threads: cancellation trees, deadlines on the
// runtime's deadline heap, values, causes and after_func.
//
//   auto [ctx, cancel] = weft::with_timeout(weft::background(), 100ms);
//   weft::select(weft::on_done(ctx, [] { ... }), weft::on_recv(ch, ...));
//   if (ctx.err() == weft::errc::deadline_exceeded) ...
//
// A Context is a cheap shared handle; every method is safe from any fiber or
// thread. The cancel handle returned by with_cancel & co. cancels when it is
// destroyed (Go's `defer cancel()`), so forgetting it cannot leak a child in
// its parent; calling it again is harmless.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>

#include "weft/channel.h"
#include "weft/detail/spinlock.h"
#include "weft/detail/wait_queue.h"
#include "weft/error.h"
#include "weft/select.h"

namespace weft {

using Clock = std::chrono::steady_clock;

// A key for with_value. Keys match by identity (the object's address), so two
// keys never collide even with equal names or value types; T is the type of
// the value, so lookups are type-safe. Define keys as globals or statics.
template <class T>
class ContextKey {
 public:
  explicit constexpr ContextKey(const char* name) noexcept : name_(name) {}
  ContextKey(const ContextKey&) = delete;
  ContextKey& operator=(const ContextKey&) = delete;
  const char* name() const noexcept { return name_; }

 private:
  const char* name_;
};

namespace detail {

// What a waiter of ctx.done() needs: the state every cancelable context has.
struct DoneSignal {
  SpinLock lock;
  std::atomic<int> err{0};  // 0, or an errc; set once, under lock
  ChanWaitQueue waiters;    // parked done() waits and select cases, under lock
};

class ContextNode;
struct ContextAccess;
class HookTarget;

}  // namespace detail

// Go's <-ctx.Done(): a waitable event. Null (operator bool false) for
// contexts that can never be canceled (background, without_cancel).
class Done {
 public:
  explicit operator bool() const noexcept { return signal_ != nullptr; }
  // Non-blocking: true once the context is done.
  bool ready() const noexcept {
    return signal_ && signal_->err.load(std::memory_order_acquire) != 0;
  }
  // Parks the calling fiber (or thread) until the context is done. On a
  // context that can never be done this never returns, as Go's nil channel.
  void wait() const;
  friend bool operator==(const Done& a, const Done& b) noexcept { return a.signal_ == b.signal_; }

 private:
  friend class Context;
  friend struct detail::ContextAccess;
  Done(std::shared_ptr<const detail::ContextNode> owner, detail::DoneSignal* signal) noexcept
      : owner_(std::move(owner)), signal_(signal) {}
  std::shared_ptr<const detail::ContextNode> owner_;  // keeps signal_ alive
  detail::DoneSignal* signal_;
};

class Context {
 public:
  // A default Context is background().
  Context() noexcept;

  // The deadline, if this context or an ancestor it inherits from has one.
  std::optional<Clock::time_point> deadline() const noexcept;
  // Empty until done; then errc::canceled or errc::deadline_exceeded, forever.
  std::error_code err() const noexcept;
  Done done() const noexcept;
  // The value bound to `key` by the innermost with_value, or null.
  template <class T>
  const T* value(const ContextKey<T>& key) const noexcept {
    return static_cast<const T*>(find_value(&key));
  }
  // The same lookup by the key's address, untyped: what a ContextImpl's
  // value() passes on to the context it wraps.
  const void* value(const void* key) const noexcept { return find_value(key); }
  // Go's String(): "context.Background.WithCancel", ...
  std::string to_string() const;

  friend bool operator==(const Context& a, const Context& b) noexcept { return a.node_ == b.node_; }

 private:
  friend struct detail::ContextAccess;
  explicit Context(std::shared_ptr<const detail::ContextNode> node) noexcept
      : node_(std::move(node)) {}
  const void* find_value(const void* key) const noexcept;
  detail::DoneSignal* signal() const noexcept;

  std::shared_ptr<const detail::ContextNode> node_;
};

Context background() noexcept;
Context todo() noexcept;

// Cancels its context with errc::canceled; idempotent, never waits; also
// called by the destructor. Move-only.
class CancelFunc {
 public:
  CancelFunc() noexcept = default;
  CancelFunc(CancelFunc&&) noexcept = default;
  CancelFunc& operator=(CancelFunc&& other) noexcept;
  ~CancelFunc();
  void operator()() const noexcept;

 private:
  friend struct detail::ContextAccess;
  explicit CancelFunc(std::shared_ptr<detail::ContextNode> node) noexcept
      : node_(std::move(node)) {}
  std::shared_ptr<detail::ContextNode> node_;
};

// Like CancelFunc, with a cause that cause(ctx) reports (empty: errc::canceled).
class CancelCauseFunc {
 public:
  CancelCauseFunc() noexcept = default;
  CancelCauseFunc(CancelCauseFunc&&) noexcept = default;
  CancelCauseFunc& operator=(CancelCauseFunc&& other) noexcept;
  ~CancelCauseFunc();
  void operator()(std::error_code cause = {}) const noexcept;

 private:
  friend struct detail::ContextAccess;
  explicit CancelCauseFunc(std::shared_ptr<detail::ContextNode> node) noexcept
      : node_(std::move(node)) {}
  std::shared_ptr<detail::ContextNode> node_;
};

// What with_cancel & co. return: the child context and its cancel handle,
// which cancels when destroyed (Go's `defer cancel()`). The forms:
//
//   auto [ctx, cancel] = weft::with_timeout(parent, 5s);  // cancels at scope end
//   auto made = weft::with_cancel(parent);                 // cancels when `made` dies
//   use(made.ctx); made.cancel();
//   auto ctx = weft::with_timeout(parent, 5s).ctx;         // Go's `ctx, _ :=`
//
// The last takes the context out of a temporary whose cancel would run at the
// end of the statement; so when a result is destroyed with its ctx moved
// out, and was never unpacked with `auto [ctx, cancel]`, its cancel is
// dropped unrun: the context stays live until its deadline, its parent's
// cancel, or its last copy's end (it then leaves its parent; nothing leaks).
// So moving `made.ctx` out of a named result gives up that result's cancel
// on destruction too (made.cancel() still cancels when called): copy
// `made.ctx` instead, or move `made.cancel` out with it. Unpacked names keep
// their cancel whatever is moved out of them.
template <class Cancel>
struct WithCancelResult {
  Context ctx;
  Cancel cancel;

  WithCancelResult(Context c, Cancel k) noexcept : ctx(std::move(c)), cancel(std::move(k)) {}
  WithCancelResult(WithCancelResult&&) noexcept = default;
  WithCancelResult& operator=(WithCancelResult&&) noexcept = default;
  ~WithCancelResult();

  // For `auto [ctx, cancel] = ...`, which calls these (the tuple protocol
  // below), so that an unpacked result keeps its cancel.
  template <std::size_t I>
  auto& get() & noexcept {
    unpacked_ = true;
    if constexpr (I == 0) {
      return ctx;
    } else {
      return cancel;
    }
  }
  template <std::size_t I>
  auto& get() && noexcept {
    return get<I>();
  }
  template <std::size_t I>
  const auto& get() const& noexcept {
    unpacked_ = true;
    if constexpr (I == 0) {
      return ctx;
    } else {
      return cancel;
    }
  }

 private:
  mutable bool unpacked_ = false;
};

WithCancelResult<CancelFunc> with_cancel(const Context& parent);
WithCancelResult<CancelCauseFunc> with_cancel_cause(const Context& parent);
// A deadline later than the parent's gives a plain cancel context (and
// ignores `cause`); one not in the future gives a context already done.
WithCancelResult<CancelFunc> with_deadline(const Context& parent, Clock::time_point deadline);
WithCancelResult<CancelFunc> with_deadline_cause(const Context& parent, Clock::time_point deadline,
                                                 std::error_code cause);
WithCancelResult<CancelFunc> with_timeout(const Context& parent, Clock::duration timeout);
WithCancelResult<CancelFunc> with_timeout_cause(const Context& parent, Clock::duration timeout,
                                                std::error_code cause);

namespace detail {
Context with_value_erased(const Context& parent, const void* key, const char* key_name,
                          std::shared_ptr<const void> value);
}

template <class T, class V>
Context with_value(const Context& parent, const ContextKey<T>& key, V&& value) {
  return detail::with_value_erased(parent, &key, key.name(),
                                   std::make_shared<const T>(std::forward<V>(value)));
}
// Shadows an outer binding of `key`: value(key) is null below this context.
template <class T>
Context with_value(const Context& parent, const ContextKey<T>& key, std::nullopt_t) {
  return detail::with_value_erased(parent, &key, key.name(), nullptr);
}

// Values pass through; done, err, deadline and cause do not.
Context without_cancel(const Context& parent);

// The innermost cause set by a cancellation, else err() (empty until done).
std::error_code cause(const Context& ctx) noexcept;

// Go's context.AfterFunc: runs fn in a new fiber once ctx is done (at once if
// it already is). Copyable handle.
class AfterFuncStop {
 public:
  AfterFuncStop() noexcept = default;  // stops nothing
  // True only for the call that prevented fn from running.
  bool operator()() const noexcept;

  struct Registration;  // opaque

 private:
  friend AfterFuncStop after_func(const Context& ctx, std::function<void()> fn);
  explicit AfterFuncStop(std::shared_ptr<Registration> reg) noexcept : reg_(std::move(reg)) {}
  std::shared_ptr<Registration> reg_;
};
AfterFuncStop after_func(const Context& ctx, std::function<void()> fn);

// ---- Contexts weft did not make (Go's Context interface) --------------------
//
// Implement one to merge two parents, to carry request-scoped data with
// deadline rules of your own, or to adapt another framework's cancellation;
// make_context() turns it into a Context accepted everywhere one is (socket
// operations, with_*, select, after_func). Go's rules apply:
// - done() returns the same Done on every call, or a null one if this
//   context can never be done. A Done comes from a weft context: the usual
//   way is to hold a with_cancel(background()) and cancel it when yours is
//   done (after_func on each parent, for a merge).
// - err() is empty until done() is ready, then errc::canceled or
//   errc::deadline_exceeded (anything else reads as canceled to children).
// - deadline() answers the same on every call (it is asked once).
// - value(key) answers its own keys and passes the others on to the context
//   it wraps (`return parent.value(key);`); that is how values, Go's Cause
//   and a wrapped weft context are found through it.
// - cause(): by default Go's Cause, the cause of the innermost weft cancel
//   context found through value(), else err().
// - after_func(fn), optional (Go 1.21's afterFuncer): run fn once this
//   context is done and return a function that unregisters it (true only if
//   it stopped fn from running); return an empty one (the default) to offer
//   none.
//
// A context derived from yours is cancelled with it, by the first of these
// that applies (Go's propagateCancel): it is born done if yours already is;
// if yours wraps a weft cancel context and returns that context's Done, the
// child registers there directly and is cancelled synchronously; if you
// offer after_func, through it; otherwise one watcher fiber per child waits
// for either side to be done (so it needs a running runtime, as after_func
// does, and ends as soon as the child does).
class ContextImpl {
 public:
  virtual ~ContextImpl() = default;
  virtual Done done() const noexcept = 0;
  virtual std::error_code err() const noexcept = 0;
  virtual std::optional<Clock::time_point> deadline() const noexcept { return std::nullopt; }
  virtual const void* value(const void* key) const noexcept {
    (void)key;
    return nullptr;
  }
  virtual std::error_code cause() const noexcept;
  virtual std::function<bool()> after_func(std::function<void()> fn) const {
    (void)fn;
    return {};
  }
  // What to_string() shows for this layer (Go prints the type's name).
  virtual std::string name() const { return "custom"; }
};

Context make_context(std::shared_ptr<const ContextImpl> impl);

// std::stop_token and std::stop_source, both ways, for std::jthread and
// std::stop_callback users:
// - a child of `parent` cancelled (errc::canceled) when stop is requested on
//   `token`, synchronously, on the requesting thread;
// - a std::stop_source that is requested once ctx is done, from a fiber
//   started as after_func starts one (a stop_callback may run any code, so
//   not inside the cancel).
WithCancelResult<CancelFunc> with_stop_token(const Context& parent, std::stop_token token);
std::stop_source stop_source_of(const Context& ctx);

namespace detail {

// Where a context's done() waits; lock_key identifies it for select.
template <class F>
class DoneCase final : public SelectCase {
 public:
  DoneCase(DoneSignal* signal, F fn) : signal_(signal), fn_(std::move(fn)) {}
  const void* lock_key() const override { return signal_ ? signal_ : never_key(); }
  void lock() override {
    if (signal_) signal_->lock.lock();
  }
  void unlock() override {
    if (signal_) signal_->lock.unlock();
  }
  int try_complete(ChanWaiter**) override {
    return signal_ && signal_->err.load(std::memory_order_relaxed) != 0 ? 1 : -1;
  }
  void enqueue(ChanWaiter* w) override {
    if (signal_) signal_->waiters.push_back(w);
  }
  void dequeue(ChanWaiter* w) override {
    if (signal_) signal_->waiters.remove(w);
  }
  void* value_slot() override { return nullptr; }
  void run(bool) override {
    // Guarded so that a wrong handler fails with on_done's message only.
    if constexpr (std::is_invocable_v<F&>) fn_();
  }

 private:
  // A context that can never be done is a case that never completes (Go's
  // nil channel), distinct from a default case.
  static const void* never_key() noexcept {
    static const char key = 0;
    return &key;
  }
  DoneSignal* signal_;
  F fn_;
};

// The implementation's way in; not for users.
struct ContextAccess {
  static DoneSignal* signal(const Context& ctx) noexcept { return ctx.signal(); }
  static DoneSignal* signal(const Done& done) noexcept { return done.signal_; }
  static const std::shared_ptr<const ContextNode>& node(const Context& ctx) noexcept {
    return ctx.node_;
  }
  static Context make_context(std::shared_ptr<const ContextNode> node) noexcept {
    return Context(std::move(node));
  }
  static CancelFunc make_cancel(std::shared_ptr<ContextNode> node) noexcept {
    return CancelFunc(std::move(node));
  }
  static CancelCauseFunc make_cancel_cause(std::shared_ptr<ContextNode> node) noexcept {
    return CancelCauseFunc(std::move(node));
  }
  // Lets go of the context without cancelling it.
  template <class Cancel>
  static void drop(Cancel& cancel) noexcept {
    cancel.node_.reset();
  }
};

// An entry in a cancelable context's set of children: a child context, an
// after_func registration, or a DoneHook. Linked and unlinked under the
// parent's lock.
struct ChildLink {
  ChildLink* prev = nullptr;
  ChildLink* next = nullptr;
  bool linked = false;
  // For a child context only (CancelNode sets waits_for_release): where a
  // parent that is done with it stands, set by the parent under its lock
  // around parent_done() and read without that lock by the child's
  // destruction (CancelNode::detach_from_parent). Other links may be gone
  // once parent_done() returns, so nothing marks them.
  bool waits_for_release = false;
  std::atomic<std::uint8_t> parent_state{0};
  // Under the parent's lock, already unlinked: the parent is done (err != 0),
  // or is being destroyed without ever being done (err == 0).
  virtual void parent_done(int err, const std::error_code& cause) noexcept = 0;

 protected:
  ~ChildLink() = default;
};

// The fastest way from a cancellation to the runtime: `fn(arg)` runs inside
// the cancel() that makes the context done, on the canceller's thread, under
// the context's lock, so it must be short and must not block or touch the
// context. net/ uses it to set an expired deadline on a parked socket (Go's
// watcher goroutine, without the goroutine). Lives wherever the caller keeps
// it (the operation's stack); no allocation.
class DoneHook final : public ChildLink {
 public:
  DoneHook(void (*fn)(void*), void* arg) noexcept : fn_(fn), arg_(arg) {}
  DoneHook(const DoneHook&) = delete;
  DoneHook& operator=(const DoneHook&) = delete;
  void parent_done(int err, const std::error_code&) noexcept override {
    if (err != 0) fn_(arg_);
  }

 private:
  void (*fn_)(void*);
  void* arg_;
};

// What a DoneHook links to for `ctx`: ctx itself, unless ctx is a user's
// context that neither is nor wraps a weft cancel context; then a child of
// it, cancelled through the user's after_func or a watcher fiber, and kept
// for as long as this lives.
class HookTarget {
 public:
  explicit HookTarget(const Context& ctx);
  const Context& ctx() const noexcept { return bridge_ ? bridge_->ctx : *ctx_; }

 private:
  const Context* ctx_;
  // On the heap: only a user's context needs one, and a HookTarget is kept
  // per socket direction and per idle waiter (issue 19's bytes per idle
  // connection); inline it was 48 of HookTarget's 56 bytes.
  std::unique_ptr<WithCancelResult<CancelFunc>> bridge_;
};

// Links `hook` to ctx (a HookTarget's). Returns ctx's error instead
// (linking nothing) if ctx is already done; an empty code also when ctx can
// never be done.
std::error_code attach_done_hook(const Context& ctx, DoneHook* hook) noexcept;
// Unlinks `hook`; true if it was still linked (fn has not run and won't).
// False means fn has run: it finished before this returned.
bool detach_done_hook(const Context& ctx, DoneHook* hook) noexcept;

// How many children (contexts and after_func registrations) ctx's innermost
// cancelable context holds: for tests that check that children detach.
std::size_t child_count(const Context& ctx) noexcept;
// Watcher fibers for children of users' contexts, alive now and ever
// started (Go's XTestCustomContextGoroutines counts the same).
std::int64_t context_watchers_alive() noexcept;
std::uint64_t context_watchers_started() noexcept;

}  // namespace detail

template <class Cancel>
WithCancelResult<Cancel>::~WithCancelResult() {
  if (!unpacked_ && !detail::ContextAccess::node(ctx)) detail::ContextAccess::drop(cancel);
}

// A select case that runs fn once ctx is done. The context must outlive the
// select call.
template <class F>
auto on_done(const Context& ctx, F fn) {
  static_assert(std::is_invocable_v<F&>,
                "weft::on_done: the handler must be callable as f(), e.g. [] { ... }");
  return detail::DoneCase<F>(detail::ContextAccess::signal(ctx), std::move(fn));
}

}  // namespace weft

// The tuple protocol behind `auto [ctx, cancel] = weft::with_cancel(...)`.
template <class Cancel>
struct std::tuple_size<weft::WithCancelResult<Cancel>> : std::integral_constant<std::size_t, 2> {};
template <class Cancel>
struct std::tuple_element<0, weft::WithCancelResult<Cancel>> {
  using type = weft::Context;
};
template <class Cancel>
struct std::tuple_element<1, weft::WithCancelResult<Cancel>> {
  using type = Cancel;
};
