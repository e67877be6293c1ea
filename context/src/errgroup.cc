#include "weft/errgroup.h"

#include <cstdio>
#include <cstdlib>

namespace weft {

namespace {
[[noreturn]] void misused_group(const char* what) {
  std::fprintf(stderr, "weft::Group: %s\n", what);
  std::abort();
}
}  // namespace

GroupWithContext Group::with_context(const Context& parent) {
  auto [ctx, cancel] = with_cancel_cause(parent);
  return GroupWithContext{Group(std::move(cancel)), std::move(ctx)};
}

Group::~Group() {
  cancel_();  // an empty one (no context) cancels nothing
  running_.wait();
}

void Group::take_slot() {
  if (!limit_) return;
  // The only failure is a weight over the size: 1 over a limit of 0.
  if (limit_->acquire(1)) misused_group("go() with a limit of 0 can never start a fiber");
}

bool Group::try_take_slot() noexcept {
  return !limit_ || limit_->try_acquire(1);
}

void Group::finish(std::error_code result) noexcept {
  if (result) {
    first_failure_.call([&] {
      first_error_ = result;
      cancel_(result);
    });
  }
  if (limit_) limit_->release(1);
  // Last: wait() may return, and the group go, as soon as this counts down.
  running_.done();
}

std::error_code Group::wait() {
  running_.wait();
  // WaitGroup orders every finish() before this: first_error_ is settled.
  // An empty cause cancels with errc::canceled, as Go's cancel(nil).
  cancel_(first_error_);
  return first_error_;
}

void Group::set_limit(std::int64_t n) {
  // Taking the whole size succeeds only when no fiber holds a slot and no
  // go() waits for one.
  if (limit_ && !limit_->try_acquire(limit_size_)) {
    misused_group("set_limit() while fibers of the group run");
  }
  limit_ = n < 0 ? nullptr : std::make_unique<Semaphore>(n);
  limit_size_ = n;
}

}  // namespace weft
