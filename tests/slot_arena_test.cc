// The slot arena under PollDescs (slot_arena.h) and the grace periods that
// guard its pages (grace.h): pages go back only when every slot on them is
// free, only after every reader that could hold one has left, and never
// under a slot taken meanwhile.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "grace.h"
#include "registry.h"
#include "slot_arena.h"

namespace {

using weft::detail::GraceSection;
using weft::detail::SlotArena;

constexpr std::size_t kSlot = 224;  // about a PollDesc

// Steps the arena's release (each call one step of its grace period) until
// it gives pages back; how many it gave, 0 if it never did.
std::size_t scavenge_until_given_back(SlotArena& arena) {
  for (int step = 0; step < 8; ++step) {
    if (const std::size_t pages = arena.scavenge(0, 0)) return pages;
  }
  return 0;
}

bool all_zero(const void* p, std::size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) {
    if (b[i]) return false;
  }
  return true;
}

TEST(SlotArena, PagesOfFreedSlotsGoBackAndASlotKeepsItsOwn) {
  SlotArena arena(kSlot);
  std::vector<void*> slots;
  for (int i = 0; i < 2000; ++i) {  // a few chunks
    const SlotArena::Slot s = arena.take();
    ASSERT_NE(s.at, nullptr);
    EXPECT_TRUE(s.fresh);
    std::memset(s.at, 0x5A, kSlot);
    slots.push_back(s.at);
  }
  const std::size_t full = arena.stats().resident_bytes;
  // The first slot stays taken, as a listener's desc would.
  for (std::size_t i = 1; i < slots.size(); ++i) arena.put(slots[i]);
  const std::size_t pages = scavenge_until_given_back(arena);
  ASSERT_GT(pages, 0u);
  EXPECT_LT(arena.stats().resident_bytes, full / 4);
  EXPECT_EQ(arena.stats().live, 1u);
  // The kept slot and its page are intact; the last slot's page read back
  // as zeroes (given back), and it is handed out to be built again.
  for (std::size_t b = 0; b < kSlot; ++b) {
    ASSERT_EQ(static_cast<unsigned char*>(slots[0])[b], 0x5A);
    ASSERT_EQ(static_cast<unsigned char*>(slots[1])[b], 0x5A) << "a page with a live slot went";
  }
  EXPECT_TRUE(all_zero(slots.back(), kSlot));
  // Taken again, a slot with a byte on a page that went back is handed out
  // to be built again; one whose pages all stayed still holds its object:
  // slot 1, which shares slot 0's page, among them.
  bool slot1_kept = false;
  std::size_t fresh = 0;
  for (std::size_t i = 1; i < slots.size(); ++i) {
    const SlotArena::Slot s = arena.take();
    if (s.fresh) {
      ++fresh;
    } else {
      for (std::size_t b = 0; b < kSlot; ++b) ASSERT_EQ(static_cast<unsigned char*>(s.at)[b], 0x5A);
    }
    slot1_kept |= s.at == slots[1] && !s.fresh;
  }
  EXPECT_TRUE(slot1_kept);
  EXPECT_GT(fresh, slots.size() / 2);
  EXPECT_EQ(arena.stats().live, slots.size());
}

TEST(SlotArena, GenerationsOutliveTheirPages) {
  SlotArena arena(kSlot);
  std::vector<void*> slots;
  for (int i = 0; i < 600; ++i) slots.push_back(arena.take().at);
  std::vector<std::uint32_t> before;
  for (void* s : slots) before.push_back(arena.generation(s).load());
  for (void* s : slots) arena.put(s);
  ASSERT_GT(scavenge_until_given_back(arena), 0u);
  // A stale token's generation can never match a slot built again.
  for (std::size_t i = 0; i < slots.size(); ++i) {
    EXPECT_EQ(arena.generation(slots[i]).load(), before[i] + 1);
  }
}

TEST(SlotArena, AReaderInsideAGraceSectionHoldsThePagesBack) {
  SlotArena arena(kSlot);
  std::vector<void*> slots;
  for (int i = 0; i < 600; ++i) slots.push_back(arena.take().at);
  const std::size_t full = arena.stats().resident_bytes;
  {
    // Begun before the pages were retired: it may hold a pointer found
    // current then.
    GraceSection reader;
    for (void* s : slots) arena.put(s);
    for (int step = 0; step < 20; ++step) ASSERT_EQ(arena.scavenge(0, 0), 0u) << "step " << step;
    EXPECT_EQ(arena.stats().resident_bytes, full);
  }
  EXPECT_GT(scavenge_until_given_back(arena), 0u);
}

TEST(SlotArena, AReaderOnAnotherThreadHoldsThePagesBack) {
  SlotArena arena(kSlot);
  std::vector<void*> slots;
  for (int i = 0; i < 600; ++i) slots.push_back(arena.take().at);
  std::atomic<int> stage{0};
  std::thread reader([&] {
    GraceSection section;
    stage.store(1);
    while (stage.load() != 2) std::this_thread::yield();
  });
  while (stage.load() != 1) std::this_thread::yield();
  for (void* s : slots) arena.put(s);
  for (int step = 0; step < 20; ++step) ASSERT_EQ(arena.scavenge(0, 0), 0u);
  stage.store(2);
  reader.join();
  EXPECT_GT(scavenge_until_given_back(arena), 0u);
}

TEST(SlotArena, ATakeDuringTheGracePeriodKeepsItsPage) {
  SlotArena arena(kSlot);
  std::vector<void*> slots;
  for (int i = 0; i < 600; ++i) slots.push_back(arena.take().at);
  for (void* s : slots) arena.put(s);
  ASSERT_EQ(arena.scavenge(0, 0), 0u);  // marks the pages, begins the grace period
  const SlotArena::Slot s = arena.take();
  ASSERT_NE(s.at, nullptr);
  EXPECT_FALSE(s.fresh);
  std::memset(s.at, 0x33, kSlot);
  ASSERT_GT(scavenge_until_given_back(arena), 0u);
  for (std::size_t b = 0; b < kSlot; ++b) {
    ASSERT_EQ(static_cast<unsigned char*>(s.at)[b], 0x33) << "the page of a taken slot went";
  }
  arena.put(s.at);
}

TEST(SlotArena, RecentlyFreedPagesWaitTheirIdleTime) {
  SlotArena arena(kSlot);
  std::vector<void*> slots;
  for (int i = 0; i < 600; ++i) slots.push_back(arena.take().at);
  for (void* s : slots) arena.put(s);
  // "Now" is the time of the puts: none has been free for 10 s.
  const std::uint32_t now = weft::detail::coarse_now_ms();
  for (int step = 0; step < 8; ++step) ASSERT_EQ(arena.scavenge(now, 10'000), 0u);
  for (int step = 0; step < 8; ++step) {
    if (arena.scavenge(now + 10'000, 10'000)) return;
  }
  ADD_FAILURE() << "pages free for their idle time were not given back";
}

}  // namespace
