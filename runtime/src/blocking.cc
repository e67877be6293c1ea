// The blocking-work pool: threads outside the workers that run whatever
// would stall a worker (file I/O, getaddrinfo, CPU-heavy work). Threads are
// started on demand up to a cap and retire after a while idle.
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "env.h"
#include "weft/detail/park.h"
#include "weft/runtime.h"

namespace weft::detail {
namespace {

struct Task {
  void (*fn)(void*);
  void* arg;
  Fiber* waiter;
  Task* next;
};

int max_threads() {
  const auto n =
      env_number("WEFT_BLOCKING_THREADS", 1, 4096, "a thread count from 1 to 4096", "using 256");
  return n ? static_cast<int>(*n) : 256;
}

class BlockingPool {
 public:
  void submit(Task* t) {
    std::unique_lock lock(mu_);
    t->next = nullptr;
    if (tail_) {
      tail_->next = t;
    } else {
      head_ = t;
    }
    tail_ = t;
    if (idle_ > 0) {
      --idle_;  // claimed: a second submit before it wakes must not count it again
      lock.unlock();
      cv_.notify_one();
      return;
    }
    if (threads_ < max_) {
      ++threads_;
      lock.unlock();
      std::thread([this] { serve(); }).detach();
    }
  }

 private:
  void serve() {
    std::unique_lock lock(mu_);
    for (;;) {
      while (!head_) {
        ++idle_;
        const bool woke = cv_.wait_for(lock, std::chrono::seconds(30), [this] { return head_; });
        if (!woke) {
          --idle_;
          --threads_;
          return;
        }
      }
      Task* t = head_;
      head_ = t->next;
      if (!head_) tail_ = nullptr;
      lock.unlock();
      t->fn(t->arg);
      ready(t->waiter);  // t lives on the waiter's stack: last touch
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  Task* head_ = nullptr;
  Task* tail_ = nullptr;
  int idle_ = 0;
  int threads_ = 0;
  const int max_ = max_threads();
};

BlockingPool& pool() {
  // Never destroyed: detached pool threads may outlive main's statics.
  static BlockingPool* p = new BlockingPool;
  return *p;
}

}  // namespace

void run_blocking(void (*fn)(void*), void* arg) {
  if (!on_fiber()) {
    fn(arg);  // a plain thread may block itself
    return;
  }
  Task task{fn, arg, nullptr, nullptr};
  park_with([&task](Fiber* self) {
    task.waiter = self;
    pool().submit(&task);
    return true;
  });
}

}  // namespace weft::detail
