// Checks weft_switch for AArch64 under qemu: a coroutine on its own stack,
// entered through weft_fiber_trampoline with the frame layout that
// Worker::prepare builds, must preserve callee-saved registers (the compiler
// keeps live values in them across the calls) and per-context FPCR.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
extern "C" void weft_switch(void** save, void* load);
extern "C" void weft_fiber_trampoline();
static void* main_sp;
static void* co_sp;
static volatile long shared = 0;

static std::uint64_t get_fpcr() {
  std::uint64_t v;
  asm volatile("mrs %0, fpcr" : "=r"(v));
  return v;
}
static void set_fpcr(std::uint64_t v) {
  asm volatile("msr fpcr, %0" ::"r"(v));
}

static void co_main(void* arg) {
  long base = reinterpret_cast<long>(arg);
  set_fpcr(0x400000);  // round towards +inf in the coroutine only
  double acc = 1.5;
  for (long i = 0;; ++i) {
    acc = acc * 1.000001 + static_cast<double>(i);  // keep d8-d15 / x19+ busy
    shared = base + i;
    if (get_fpcr() != 0x400000) {
      std::puts("FAIL: coroutine FPCR lost");
      std::exit(1);
    }
    weft_switch(&co_sp, main_sp);
  }
}

int main() {
  const std::size_t size = 64 * 1024;
  char* stack = static_cast<char*>(std::aligned_alloc(16, size));
  auto top = reinterpret_cast<std::uintptr_t>(stack + size) & ~std::uintptr_t{15};
  auto* frame = reinterpret_cast<std::uint64_t*>(top - 176);
  std::memset(frame, 0, 176);
  frame[0] = 1000;                                                      // x19: arg
  frame[1] = reinterpret_cast<std::uint64_t>(&co_main);                 // x20: entry
  frame[11] = reinterpret_cast<std::uint64_t>(&weft_fiber_trampoline);  // x30
  co_sp = frame;
  set_fpcr(0);
  long local_a = 7, local_b = 11;
  double d = 2.25;
  for (int i = 0; i < 100000; ++i) {
    weft_switch(&main_sp, co_sp);
    if (shared != 1000 + i) {
      std::printf("FAIL: shared %ld at %d\n", shared, i);
      return 1;
    }
    if (get_fpcr() != 0) {
      std::puts("FAIL: main FPCR changed");
      return 1;
    }
    local_a += i;
    local_b ^= i;
    d = d * 1.0000001 + 1;
  }
  std::printf("aarch64 switch OK (%ld %ld %.3f)\n", local_a, local_b, d);
  return 0;
}
