// An HTTP/1.1 keep-alive "Hello, World!" responder: enough HTTP for wrk and
// curl (pipelined requests are answered in order, with one write per batch).
// SIGINT/SIGTERM stops accepting, answers the requests already read, closes
// idle keep-alive connections, cuts those still busy after the grace
// period, and exits 0. A request head over 1 MiB is answered 431 (Go's
// DefaultMaxHeaderBytes); one slower than the header timeout, and a
// connection idle for the idle timeout, are closed.
//
//   weft-http-hello [--grace=3s] [--idle-timeout=60s] [--header-timeout=10s] [ADDR]
//                             (default 127.0.0.1:8080; the flags are serve.h's)
#include <cstdio>
#include <string>
#include <string_view>

#include "serve.h"

namespace {

constexpr std::string_view kResponse =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, World!\n";
// Go's answer to a head over its limit.
constexpr std::string_view kTooLarge =
    "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; "
    "charset=utf-8\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large";
constexpr std::size_t kMaxHeaderBytes = 1 << 20;

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

void serve_connection(Session& s) {
  std::string in, out;
  char buf[16 * 1024];
  bool close_after = false;
  // `in` holds no "\r\n\r\n" before here: searching from the start after
  // every read would make a long head cost quadratic time.
  std::size_t scanned = 0;
  while (!close_after) {
    auto r = in.empty() ? s.read_request(buf, sizeof buf) : s.read_rest(buf, sizeof buf);
    if (!r) return;  // EOF, an error, shutdown while idle, or a timeout
    in.append(buf, r.count());
    std::size_t start = 0;
    // Requests have no body here (GET); each ends at its blank line.
    for (std::size_t end; (end = in.find("\r\n\r\n", scanned)) != std::string::npos;) {
      if (end - start > kMaxHeaderBytes) break;
      close_after = asks_to_close(std::string_view(in).substr(start, end - start));
      out += kResponse;
      start = scanned = end + 4;
      s.request_done();
      if (close_after) break;
    }
    if (!out.empty() && !s.write(out)) return;
    out.clear();
    if (!close_after && in.size() - start > kMaxHeaderBytes) return s.reject(kTooLarge);
    in.erase(0, start);
    scanned = in.size() < 3 ? 0 : in.size() - 3;  // the blank line may straddle reads
  }
}

}  // namespace

int main(int argc, char** argv) {
  return serve(config_from_args(argc, argv, "127.0.0.1:8080", "weft-http-hello [FLAGS] [ADDR]"),
               serve_connection);
}
