#include "grace.h"

#include <cstddef>

#include "chaos.h"

namespace weft::detail {

namespace {

// Sharded so that readers on different threads never share a line; a thread
// keeps its shard, so each shard's counts stay non-negative and a zero sum
// means what it says.
constexpr std::size_t kShards = 16;

struct alignas(64) Shard {
  std::atomic<std::int64_t> count[2] = {0, 0};
};

Shard g_shards[kShards];
std::atomic<std::uint32_t> g_epoch{0};
std::atomic<std::uint32_t> g_next_shard{0};

Shard& my_shard() {
  __attribute__((tls_model("initial-exec"))) static thread_local Shard* mine = nullptr;
  if (!mine) mine = &g_shards[g_next_shard.fetch_add(1, std::memory_order_relaxed) % kShards];
  return *mine;
}

std::int64_t readers(std::uint32_t parity) {
  std::int64_t sum = 0;
  // seq_cst, the writer's half of a Dekker pair: the retirement stored a
  // generation (seq_cst) before this load; a section stores its count
  // (seq_cst) before it loads that generation (seq_cst). So a section this
  // load does not see finds the memory retired.
  for (const Shard& s : g_shards) sum += s.count[parity].load(std::memory_order_seq_cst);
  return sum;
}

}  // namespace

GraceSection::GraceSection() noexcept {
  // seq_cst on both: the epoch's load pairs with the writer's flip; the
  // increment is the section's half of the Dekker pair in readers(), before
  // its seq_cst load of the generation that says whether memory is current.
  const std::uint32_t parity = g_epoch.load(std::memory_order_seq_cst) & 1;
  count_ = &my_shard().count[parity];
  chaos::at(chaos::Point::grace);  // a writer may flip and scan here
  count_->fetch_add(1, std::memory_order_seq_cst);
}

GraceSection::~GraceSection() {
  // release: the section's last touch of the memory comes before the
  // writer's seq_cst load that sees the count drop (readers()).
  count_->fetch_sub(1, std::memory_order_release);
}

void GracePeriod::begin() noexcept {
  phase_ = Phase::drain_other;
  old_parity_ = g_epoch.load(std::memory_order_seq_cst) & 1;
}

bool GracePeriod::done() noexcept {
  switch (phase_) {
    case Phase::idle:
      return false;
    case Phase::drain_other:
      if (readers(old_parity_ ^ 1) != 0) return false;
      // seq_cst: pairs with the section's load of the epoch.
      g_epoch.fetch_add(1, std::memory_order_seq_cst);
      phase_ = Phase::drain_old;
      [[fallthrough]];
    case Phase::drain_old:
      if (readers(old_parity_) != 0) return false;
      phase_ = Phase::complete;
      [[fallthrough]];
    case Phase::complete:
      return true;
  }
  return false;
}

}  // namespace weft::detail
