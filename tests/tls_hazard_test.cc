// The compiler's TLS hazard under migrating fibers, shown rather than
// assumed. GCC and Clang treat a thread_local's address as constant within
// a function: code built -fPIC (general- and local-dynamic models, as in
// libweft.so or a user's shared library) may compute it once, keep it in a
// callee-saved register, and read through it after a call that parked the
// fiber and resumed it on another worker, reading the old thread's
// variable. The naive specimens (tls_hazard_lib.cc, a -fPIC -O2 shared
// library; one here in the executable's own model) are run across forced
// migrations and what each read is printed; only the safe patterns are
// asserted: a FiberLocal, and reading through a noinline accessor in
// another file.
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>

#include "test_util.h"
#include "tls_hazard_lib.h"
#include "weft/fiber_local.h"
#include "weft/runtime.h"
#include "weft/sync.h"

namespace {

namespace hz = weft_tls_hazard;

long gettid_now() {
  return syscall(SYS_gettid);
}

// The executable's own thread_local (local-exec model), naively read.
thread_local std::atomic<long> exe_tag{0};

__attribute__((noinline)) hz::Reads naive_executable(hz::Migrate migrate, void* arg) {
  const long before = exe_tag.load(std::memory_order_relaxed);
  migrate(arg);
  return {before, exe_tag.load(std::memory_order_relaxed)};
}

void stamp() {
  hz::stamp_this_thread();
  exe_tag.store(gettid_now(), std::memory_order_relaxed);
}

// Parks the fiber until the blocking pool readies it (from outside the
// workers, so any worker may take it), then stamps the thread it resumed on.
void park_and_stamp(void*) {
  weft::blocking([] {});
  stamp();
}

struct Tally {
  const char* name;
  int migrated = 0;  // resumed on another worker
  int stale = 0;     // ... and then read another thread's tag
  int wrong_unmigrated = 0;
};

// Runs one specimen once; counts a stale read only when the fiber moved.
template <class Specimen>
void run_specimen(Tally& t, Specimen specimen) {
  stamp();
  const int before = weft::worker_index();
  const hz::Reads r = specimen();
  const long tid = gettid_now();  // no switch since the specimen's last read
  const bool moved = weft::worker_index() != before;
  if (moved) {
    ++t.migrated;
    if (r.after != tid) ++t.stale;
  } else if (r.after != tid) {
    ++t.wrong_unmigrated;
  }
}

TEST(TlsHazard, NaiveReadsAcrossMigrationAndTheSafePatterns) {
  static weft::FiberLocal<long> fiber_tag;
  Tally gd{"naive, -fPIC extern thread_local (general-dynamic)"};
  Tally ld{"naive, -fPIC static thread_local (local-dynamic)"};
  Tally exe{"naive, the executable's thread_local (local-exec)"};
  Tally accessor{"noinline accessor in another file (-fPIC)"};
  int fiber_local_wrong = 0, fiber_local_migrated = 0;
  int iterations = 0;
  weft::run(
      [&] {
        // A fiber that keeps one worker busy, so that the fiber under test,
        // readied from the blocking pool, often resumes on the other one.
        std::atomic<bool> stop{false};
        weft::WaitGroup hog_done;
        hog_done.add(1);
        weft::go([&] {
          while (!stop.load(std::memory_order_relaxed)) weft::yield();
          hog_done.done();
        });
        constexpr int kWanted = 50;  // migrations per specimen
        const int bound = 20000;     // iterations: the scheduler promises no schedule
        for (; iterations < bound; ++iterations) {
          Tally* all[] = {&gd, &ld, &exe, &accessor};
          bool enough = fiber_local_migrated >= kWanted;
          for (Tally* t : all) enough = enough && t->migrated >= kWanted;
          if (enough) break;
          run_specimen(gd, [] { return hz::naive_global_dynamic(park_and_stamp, nullptr); });
          run_specimen(ld, [] { return hz::naive_local_dynamic(park_and_stamp, nullptr); });
          run_specimen(exe, [] { return naive_executable(park_and_stamp, nullptr); });
          run_specimen(accessor, [] { return hz::through_accessor(park_and_stamp, nullptr); });
          const long mine = iterations + 1;
          fiber_tag.get() = mine;
          const int before = weft::worker_index();
          park_and_stamp(nullptr);
          if (weft::worker_index() != before) ++fiber_local_migrated;
          if (*fiber_tag != mine) ++fiber_local_wrong;
        }
        stop.store(true, std::memory_order_relaxed);
        hog_done.wait();
      },
      weft::RunOptions{.workers = 2});

#if defined(__clang__)
  const std::string compiler = "clang " __clang_version__;
#else
  const std::string compiler = "gcc " __VERSION__;
#endif
  std::printf("[   INFO   ] TLS across migration (%s), %d iterations:\n", compiler.c_str(),
              iterations);
  for (const Tally* t : {&gd, &ld, &exe, &accessor}) {
    std::printf("[   INFO   ]   %-52s %s: %d stale of %d migrations\n", t->name,
                t->stale > 0 ? "EXPOSED" : "not seen", t->stale, t->migrated);
  }
  std::printf("[   INFO   ]   %-52s %d wrong of %d migrations\n", "FiberLocal<long>",
              fiber_local_wrong, fiber_local_migrated);
  RecordProperty("compiler", compiler);
  RecordProperty("naive_general_dynamic_stale", gd.stale);
  RecordProperty("naive_local_dynamic_stale", ld.stale);
  RecordProperty("naive_executable_stale", exe.stale);
  RecordProperty("migrations", gd.migrated);
  RecordProperty("naive_pic_exposed", gd.stale + ld.stale > 0 ? "yes" : "no");
  if (gd.stale + ld.stale > 0) {
    std::printf(
        "[   INFO   ]   this compiler keeps a -fPIC thread_local's address across a call: "
        "naive reads after a park are exposed\n");
  }
  if (gd.migrated == 0) {
    std::printf("[   INFO   ]   no migration happened within %d iterations: nothing shown\n",
                iterations);
  }

  // What must hold whatever the scheduler did.
  EXPECT_EQ(accessor.stale, 0) << "a noinline accessor must read the thread it runs on";
  EXPECT_EQ(accessor.wrong_unmigrated, 0);
  EXPECT_EQ(fiber_local_wrong, 0) << "a FiberLocal follows its fiber";
  // Without a move nothing can be stale, naive or not.
  EXPECT_EQ(gd.wrong_unmigrated + ld.wrong_unmigrated + exe.wrong_unmigrated, 0);
}

}  // namespace
