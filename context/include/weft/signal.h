// Go's signal.NotifyContext: a context canceled when one of the given
// signals arrives, instead of the signal's default action (which for
// SIGINT and SIGTERM ends the process).
//
//   auto [ctx, stop] = weft::notify_context(weft::background(), {SIGINT, SIGTERM});
//   serve(ctx);  // returns once ctx is done
//
// Callable before weft::run or inside it, from any thread: it installs a
// process-wide handler (sigaction), so no thread's signal mask matters.
// The context's err() is errc::canceled; cause(ctx) names the signal
// ("signal received: interrupt"). stop (or its destructor) cancels the
// context and unregisters it; once no context waits for a signal, that
// signal's previous disposition comes back, as with Go's signal.Stop.
#pragma once

#include <initializer_list>
#include <memory>
#include <system_error>

#include "weft/context.h"

namespace weft {

// The cause a signal gives its contexts: value is the signal number.
const std::error_category& signal_category() noexcept;

namespace detail {
struct SignalRegistration;
}

// Cancels the context and unregisters it; idempotent, callable from any
// thread; also run by the destructor. Move-only.
class SignalStop {
 public:
  SignalStop() noexcept = default;
  SignalStop(SignalStop&&) noexcept = default;
  SignalStop& operator=(SignalStop&& other) noexcept;
  ~SignalStop();
  void operator()() const noexcept;

 private:
  friend WithCancelResult<SignalStop> notify_context(const Context&, std::initializer_list<int>);
  // Drops node_ unrun when the ctx was taken out of a temporary result
  // (context.h, WithCancelResult): the registration then stays for good, as
  // Go's `ctx, _ := signal.NotifyContext(...)`.
  friend struct detail::ContextAccess;
  explicit SignalStop(std::shared_ptr<detail::SignalRegistration> reg) noexcept
      : node_(std::move(reg)) {}
  std::shared_ptr<detail::SignalRegistration> node_;
};

// Signals that cannot be caught (SIGKILL, SIGSTOP) or are no signal at all
// abort with a message naming them: a program that asked for them would
// otherwise wait for good.
WithCancelResult<SignalStop> notify_context(const Context& parent,
                                            std::initializer_list<int> signals);

}  // namespace weft
