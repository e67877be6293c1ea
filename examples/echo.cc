// An echo server: every byte a client sends comes back. A fiber per
// connection; SIGINT/SIGTERM stops accepting, lets connections finish what
// they already read, cuts those still writing after the grace period, and
// exits 0. A connection quiet for the idle timeout is closed. With
// --idle-without-stack, a connection waits for input with no fiber (and so
// no stack): a fiber runs only while it has input to answer.
//
//   weft-echo [--grace=3s] [--idle-timeout=60s] [--idle-without-stack] [ADDR]
//                                                    (default 127.0.0.1:7000)
//
// (The flags are serve.h's.)
#include <memory>

#include "serve.h"

int main(int argc, char** argv) {
  const ServeConfig config =
      config_from_args(argc, argv, "127.0.0.1:7000", "weft-echo [FLAGS] [ADDR]");
  if (config.idle_without_stack) {
    // Answers what came, and keeps reading while input fills the buffer
    // (a stream); true: wait for more, with no stack while nothing comes.
    return serve_on_input(config, [](Session& s) {
      char buf[512];
      for (;;) {
        auto r = s.read_request(buf, sizeof buf);
        if (!r || !s.write(std::string_view(buf, r.count()))) return false;
        if (r.count() < sizeof buf) return true;
      }
    });
  }
  return serve(config, [](Session& s) {
    // An idle connection is a fiber parked in read_request, so what it
    // holds while it waits is what each idle connection costs: a small
    // buffer here, on the page its frames touch anyway, and a large one
    // only while input comes faster than the small one takes it. (A 16 KiB
    // array on the stack was 16 KiB of resident memory per idle
    // connection: -fstack-clash-protection touches every page of a frame.)
    constexpr std::size_t kSmall = 512, kLarge = 16 * 1024;
    char small[kSmall];
    std::unique_ptr<char[]> large;
    // Waiting for more input ends at shutdown; a read that got data is
    // always answered (unless the peer stops reading for the grace period).
    for (;;) {
      char* buf = large ? large.get() : small;
      const std::size_t size = large ? kLarge : kSmall;
      auto r = s.read_request(buf, size);
      if (!r || !s.write(std::string_view(buf, r.count()))) return;
      if (r.count() < size) {
        large.reset();  // the socket was drained: back to waiting small
      } else if (!large) {
        large = std::make_unique_for_overwrite<char[]>(kLarge);  // a stream
      }
    }
  });
}
