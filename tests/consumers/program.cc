// What each consumer build compiles and runs: fibers, a channel, a context
// and a TCP round trip over loopback, through the installed headers and
// library only. Prints "weft consumer: ok" and exits 0 when all worked.
#include <weft/net.h>
#include <weft/weft.h>

#include <cstdio>
#include <string>

int main() {
  std::string failure;
  weft::run([&] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    if (!ln) {
      failure = ln.error().to_string();
      return;
    }
    weft::go([&] {
      auto c = ln->accept();
      if (!c) return;
      char buf[16];
      auto n = c->read(buf, sizeof buf);
      if (n) (void)c->write(buf, *n);
    });
    auto [ctx, cancel] = weft::with_timeout(weft::background(), std::chrono::seconds(10));
    auto conn = weft::net::dial(ctx, "tcp", ln->addr().to_string());
    if (!conn) {
      failure = conn.error().to_string();
      return;
    }
    weft::Channel<std::string> replies(1);
    weft::go([&] {
      char buf[16];
      auto n = conn->read(buf, sizeof buf);
      (void)replies.send(n ? std::string(buf, *n) : n.error().to_string());
    });
    if (auto w = conn->write(std::string("ping")); !w) failure = w.error().to_string();
    auto got = replies.recv();
    if (!got || *got != "ping") failure = "echoed " + (got ? *got : std::string("nothing"));
  });
  if (!failure.empty()) {
    std::printf("weft consumer: failed: %s\n", failure.c_str());
    return 1;
  }
  std::printf("weft consumer: ok\n");
  return 0;
}
