// An echo server: every byte a client sends comes back. A fiber per
// connection; SIGINT/SIGTERM stops accepting, lets connections finish what
// they already read, and exits 0.
//
//   weft-echo [ADDR]    (default 127.0.0.1:7000)
#include <cstdio>

#include "shutdown_signal.h"
#include "weft/net/conn.h"
#include "weft/weft.h"

int main(int argc, char** argv) {
  const char* addr = argc > 1 ? argv[1] : "127.0.0.1:7000";
  const weft::Context shutdown = shutdown_on_signals();
  return weft::run([&] {
    auto ln = weft::net::listen("tcp", addr);
    if (!ln) {
      std::fprintf(stderr, "%s\n", ln.error().to_string().c_str());
      return 1;
    }
    std::printf("listening on %s\n", ln->addr().to_string().c_str());
    std::fflush(stdout);
    weft::WaitGroup connections;
    for (;;) {
      auto conn = ln->accept(shutdown);
      if (!conn) break;  // shut down (or the listener failed)
      connections.add(1);
      weft::go([&, c = std::move(*conn)]() mutable {
        char buf[16 * 1024];
        // Waiting for more input ends at shutdown; a read that got data
        // is always answered.
        while (auto r = c.read(shutdown, buf, sizeof buf)) {
          if (!c.write(buf, r.count())) break;
        }
        (void)c.close();
        connections.done();
      });
    }
    connections.wait();
    return 0;
  });
}
