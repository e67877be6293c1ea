// An echo server: every byte a client sends comes back. A fiber per
// connection; SIGINT/SIGTERM stops accepting, lets connections finish what
// they already read, and exits 0.
//
//   weft-echo [ADDR]    (default 127.0.0.1:7000)
#include "serve.h"

int main(int argc, char** argv) {
  return serve(argc > 1 ? argv[1] : "127.0.0.1:7000",
               [](weft::net::Conn& c, const weft::Context& shutdown) {
                 char buf[16 * 1024];
                 // Waiting for more input ends at shutdown; a read that got
                 // data is always answered.
                 while (auto r = c.read(shutdown, buf, sizeof buf)) {
                   if (!c.write(buf, r.count())) break;
                 }
               });
}
