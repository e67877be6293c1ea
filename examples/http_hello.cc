// An HTTP/1.1 keep-alive "Hello, World!" responder: enough HTTP for wrk and
// curl (pipelined requests are answered in order, with one write per batch).
// SIGINT/SIGTERM stops accepting, answers the requests already read, closes
// idle keep-alive connections, and exits 0.
//
//   weft-http-hello [ADDR]    (default 127.0.0.1:8080)
#include <cstdio>
#include <string>
#include <string_view>

#include "serve.h"

namespace {

constexpr std::string_view kResponse =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, World!\n";

bool iequals(std::string_view a, std::string_view lower) {
  if (a.size() != lower.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != lower[i]) return false;
  }
  return true;
}

// "Connection: close" among the request's header lines.
bool asks_to_close(std::string_view head) {
  constexpr std::string_view kName = "connection:";
  for (std::size_t line = head.find("\r\n"); line != std::string_view::npos;
       line = head.find("\r\n", line + 2)) {
    std::string_view rest = head.substr(line + 2);
    if (rest.size() < kName.size() || !iequals(rest.substr(0, kName.size()), kName)) continue;
    rest = rest.substr(kName.size(), rest.find("\r\n") - kName.size());
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    return iequals(rest.substr(0, 5), "close");
  }
  return false;
}

void serve_connection(weft::net::Conn& c, const weft::Context& shutdown) {
  std::string in, out;
  char buf[16 * 1024];
  bool close_after = false;
  while (!close_after) {
    auto r = c.read(shutdown, buf, sizeof buf);
    if (!r) return;  // EOF, an error, or shutdown while idle
    in.append(buf, r.count());
    std::size_t start = 0;
    // Requests have no body here (GET); each ends at its blank line.
    for (std::size_t end; (end = in.find("\r\n\r\n", start)) != std::string::npos;) {
      close_after = asks_to_close(std::string_view(in).substr(start, end - start));
      out += kResponse;
      start = end + 4;
      if (close_after) break;
    }
    in.erase(0, start);
    if (!out.empty() && !c.write(out)) return;
    out.clear();
  }
}

}  // namespace

int main(int argc, char** argv) {
  return serve(argc > 1 ? argv[1] : "127.0.0.1:8080", serve_connection);
}
