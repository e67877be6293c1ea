// Tells ASan and TSan about every stack switch, so that both keep working
// across fibers. Compiles to nothing without sanitizers.
#pragma once

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define WEFT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define WEFT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT_TSAN 1
#endif
#endif

#ifdef WEFT_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
#endif
#ifdef WEFT_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace weft::detail::san {

inline void asan_start_switch(void** fake_stack_save, const void* bottom, std::size_t size) {
#ifdef WEFT_ASAN
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
  (void)fake_stack_save, (void)bottom, (void)size;
#endif
}

// A stack whose fiber never returned from its frames still has their
// redzones poisoned: clean it before another fiber reuses it.
inline void asan_unpoison_stack(const void* lo, std::size_t size) {
#ifdef WEFT_ASAN
  __asan_unpoison_memory_region(lo, size);
#else
  (void)lo, (void)size;
#endif
}

// Memory the runtime keeps for reuse (a pooled block): poisoned while
// free, so a use of it then is reported as a use after free would be.
inline void asan_poison(const void* p, std::size_t size) {
#ifdef WEFT_ASAN
  __asan_poison_memory_region(p, size);
#else
  (void)p, (void)size;
#endif
}

inline void asan_unpoison(const void* p, std::size_t size) {
#ifdef WEFT_ASAN
  __asan_unpoison_memory_region(p, size);
#else
  (void)p, (void)size;
#endif
}

inline void asan_finish_switch(void* fake_stack, const void** old_bottom, std::size_t* old_size) {
#ifdef WEFT_ASAN
  __sanitizer_finish_switch_fiber(fake_stack, old_bottom, old_size);
#else
  (void)fake_stack, (void)old_bottom, (void)old_size;
#endif
}

// A fiber abandoned while parked keeps its stack (a late completion may
// still reach it, and then reclaims it): what its frames point to is live,
// and LeakSanitizer, which scans thread stacks but not fiber stacks, is told.
inline void lsan_keep_stack(const void* lo, std::size_t size) {
#ifdef WEFT_ASAN
  __lsan_register_root_region(lo, size);
#else
  (void)lo;
  (void)size;
#endif
}
inline void lsan_forget_stack(const void* lo, std::size_t size) {
#ifdef WEFT_ASAN
  __lsan_unregister_root_region(lo, size);
#else
  (void)lo;
  (void)size;
#endif
}

inline void* tsan_current() {
#ifdef WEFT_TSAN
  return __tsan_get_current_fiber();
#else
  return nullptr;
#endif
}
inline void* tsan_create() {
#ifdef WEFT_TSAN
  return __tsan_create_fiber(0);
#else
  return nullptr;
#endif
}
inline void tsan_destroy(void* f) {
#ifdef WEFT_TSAN
  if (f) __tsan_destroy_fiber(f);
#else
  (void)f;
#endif
}
inline void tsan_switch(void* f) {
#ifdef WEFT_TSAN
  __tsan_switch_to_fiber(f, 0);
#else
  (void)f;
#endif
}

}  // namespace weft::detail::san
