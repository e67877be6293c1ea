// An echo server: every byte a client sends comes back. A fiber per
// connection; SIGINT/SIGTERM stops accepting, lets connections finish what
// they already read, cuts those still writing after the grace period, and
// exits 0. A connection quiet for the idle timeout is closed.
//
//   weft-echo [--grace=3s] [--idle-timeout=60s] [ADDR]    (default 127.0.0.1:7000)
//
// (The flags are serve.h's.)
#include "serve.h"

int main(int argc, char** argv) {
  const ServeConfig config =
      config_from_args(argc, argv, "127.0.0.1:7000", "weft-echo [FLAGS] [ADDR]");
  return serve(config, [](Session& s) {
    char buf[16 * 1024];
    // Waiting for more input ends at shutdown; a read that got data is
    // always answered (unless the peer stops reading for the grace period).
    while (auto r = s.read_request(buf, sizeof buf)) {
      if (!s.write(std::string_view(buf, r.count()))) break;
    }
  });
}
