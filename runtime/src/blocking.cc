// The blocking-work pool: threads outside the workers that run whatever
// would stall a worker (file I/O, getaddrinfo, CPU-heavy work). Threads are
// started on demand up to a cap and retire after a while idle.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "env.h"
#include "log.h"
#include "scheduler.h"
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

std::atomic<std::int64_t> g_in_flight{0};

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
      const int slot = take_slot();
      lock.unlock();
      std::thread([this, slot] { serve(slot); }).detach();
    }
  }

 public:
  int threads() {
    std::lock_guard lock(mu_);
    return threads_;
  }

 private:
  // The lowest number no live pool thread has, so that names stay short and
  // stable however often threads retire and start (weft-block-4095 is the
  // longest, 15 characters, the kernel's limit). Under mu_.
  int take_slot() {
    auto free = std::find(slot_used_.begin(), slot_used_.end(), false);
    if (free == slot_used_.end()) free = slot_used_.insert(free, false);
    *free = true;
    return static_cast<int>(free - slot_used_.begin());
  }

  void serve(int slot) {
    name_this_thread("weft-block-", slot);
    set_runtime_thread(true);
    std::unique_lock lock(mu_);
    for (;;) {
      while (!head_) {
        ++idle_;
        const bool woke = cv_.wait_for(lock, std::chrono::seconds(30), [this] { return head_; });
        if (!woke) {
          --idle_;
          --threads_;
          slot_used_[static_cast<std::size_t>(slot)] = false;
          return;
        }
      }
      Task* t = head_;
      head_ = t->next;
      if (!head_) tail_ = nullptr;
      lock.unlock();
      t->fn(t->arg);
      ready(t->waiter);  // t lives on the waiter's stack: last touch
      // After the ready: a deadlock check that finds no job in flight
      // finds this one's fiber readied (sysmon.cc).
      g_in_flight.fetch_sub(1, std::memory_order_seq_cst);
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  Task* head_ = nullptr;
  Task* tail_ = nullptr;
  int idle_ = 0;
  int threads_ = 0;
  std::vector<bool> slot_used_;
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
  g_in_flight.fetch_add(1, std::memory_order_seq_cst);
  park_with(WaitReason::blocking, [&task](Fiber* self) {
    task.waiter = self;
    pool().submit(&task);
    return true;
  });
}

int blocking_pool_threads() {
  return pool().threads();
}

std::int64_t blocking_jobs_in_flight() noexcept {
  return g_in_flight.load(std::memory_order_seq_cst);
}

}  // namespace weft::detail
