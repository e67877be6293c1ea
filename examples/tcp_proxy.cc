// A TCP proxy: each connection to LISTEN is joined to a new connection to
// UPSTREAM, both ways, by weft::io::copy (splice(2) between the sockets:
// the bytes never pass through this process's memory). When one side ends
// its stream the proxy ends the other's with a half-close, as Go's
// proxies do; SIGINT/SIGTERM stops everything and exits 0.
//
//   weft-proxy [FLAGS] LISTEN UPSTREAM     e.g. weft-proxy 127.0.0.1:8080 127.0.0.1:80
//
// (The flags are serve.h's; the timeouts do not apply: the proxy does not
// know where its peers' requests begin.)
#include <cstdio>
#include <string>

#include "serve.h"
#include "weft/io.h"

int main(int argc, char** argv) {
  ServeConfig config;
  auto args = parse_flags(argc, argv, &config, "weft-proxy [FLAGS] LISTEN UPSTREAM");
  if (args.size() != 2) {
    std::fprintf(stderr, "usage: weft-proxy [FLAGS] LISTEN UPSTREAM\n");
    return 2;
  }
  config.addr = args[0];
  const std::string upstream = args[1];
  return serve(config, [&](Session& s) {
    weft::net::Conn& client = s.conn;
    const weft::Context& shutdown = s.shutdown;
    auto up = weft::net::dial(shutdown, "tcp", upstream);
    if (!up) {
      std::fprintf(stderr, "%s\n", up.error().to_string().c_str());
      return;
    }
    weft::WaitGroup upward;
    upward.add(1);
    weft::go([&] {
      (void)weft::io::copy(shutdown, *up, client);
      (void)up->close_write();  // the client is done sending: tell upstream
      upward.done();
    });
    (void)weft::io::copy(shutdown, client, *up);
    (void)client.close_write();
    upward.wait();
    (void)up->close();
  });
}
