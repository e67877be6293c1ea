// A RESP (Redis protocol) server that answers PING with +PONG: enough for
// redis-benchmark's PING tests and redis-cli. Pipelined commands are answered
// in order, with one write per batch. SIGINT/SIGTERM stops accepting,
// answers the commands already read, and exits 0.
//
//   weft-resp-ping [ADDR]    (default 127.0.0.1:6380)
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "serve.h"

namespace {

// Parses one command at the front of `in`: a RESP array of bulk strings
// ("*1\r\n$4\r\nPING\r\n") or an inline command ("PING\r\n"). Returns the
// bytes it used, 0 if the command is not complete yet, -1 if malformed.
long parse_command(std::string_view in, std::vector<std::string_view>* args) {
  args->clear();
  auto line_end = [&](std::size_t from) { return in.find("\r\n", from); };
  if (in.empty()) return 0;
  if (in[0] != '*') {
    const std::size_t end = line_end(0);
    if (end == std::string_view::npos) return 0;
    std::string_view line = in.substr(0, end);
    for (std::size_t i = 0; i < line.size();) {
      const std::size_t space = line.find(' ', i);
      const std::size_t stop = space == std::string_view::npos ? line.size() : space;
      if (stop > i) args->push_back(line.substr(i, stop - i));
      i = stop + 1;
    }
    return static_cast<long>(end + 2);
  }
  std::size_t end = line_end(0);
  if (end == std::string_view::npos) return 0;
  const long count = std::strtol(std::string(in.substr(1, end - 1)).c_str(), nullptr, 10);
  if (count < 0 || count > 1024) return -1;
  std::size_t pos = end + 2;
  for (long i = 0; i < count; ++i) {
    if (pos >= in.size()) return 0;
    if (in[pos] != '$') return -1;
    end = line_end(pos);
    if (end == std::string_view::npos) return 0;
    const long len =
        std::strtol(std::string(in.substr(pos + 1, end - pos - 1)).c_str(), nullptr, 10);
    if (len < 0 || len > (1 << 20)) return -1;
    pos = end + 2;
    if (in.size() < pos + static_cast<std::size_t>(len) + 2) return 0;
    args->push_back(in.substr(pos, static_cast<std::size_t>(len)));
    pos += static_cast<std::size_t>(len) + 2;
  }
  return static_cast<long>(pos);
}

bool is(std::string_view word, std::string_view upper) {
  if (word.size() != upper.size()) return false;
  for (std::size_t i = 0; i < word.size(); ++i) {
    if (std::toupper(static_cast<unsigned char>(word[i])) != upper[i]) return false;
  }
  return true;
}

void answer(const std::vector<std::string_view>& args, std::string* out) {
  if (args.empty()) return;
  if (is(args[0], "PING")) {
    if (args.size() == 1) {
      *out += "+PONG\r\n";
    } else {
      out->push_back('$');
      out->append(std::to_string(args[1].size()));
      out->append("\r\n");
      *out += args[1];
      *out += "\r\n";
    }
  } else if (is(args[0], "CONFIG")) {
    *out += "*0\r\n";  // redis-benchmark asks for its settings first
  } else {
    out->append("-ERR unknown command '");
    out->append(args[0]);
    out->append("'\r\n");
  }
}

void serve_connection(weft::net::Conn& c, const weft::Context& shutdown) {
  std::string in, out;
  std::vector<std::string_view> args;
  char buf[16 * 1024];
  for (;;) {
    auto r = c.read(shutdown, buf, sizeof buf);
    if (!r) return;
    in.append(buf, r.count());
    std::size_t start = 0;
    for (;;) {
      const long used = parse_command(std::string_view(in).substr(start), &args);
      if (used < 0) {
        (void)c.write("-ERR Protocol error\r\n");
        return;
      }
      if (used == 0) break;
      answer(args, &out);
      start += static_cast<std::size_t>(used);
    }
    in.erase(0, start);
    if (!out.empty() && !c.write(out)) return;
    out.clear();
  }
}

}  // namespace

int main(int argc, char** argv) {
  return serve(argc > 1 ? argv[1] : "127.0.0.1:6380", serve_connection);
}
