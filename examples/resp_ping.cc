// A RESP (Redis protocol) server that answers PING with +PONG: enough for
// redis-benchmark's PING tests and redis-cli. Pipelined commands are answered
// in order, with one write per batch. SIGINT/SIGTERM stops accepting,
// answers the commands already read, cuts connections still busy after the
// grace period, and exits 0. Malformed or oversized input gets Redis's
// error and a close; a command slower than the header timeout, and a
// connection idle for the idle timeout, are closed.
//
//   weft-resp-ping [--grace=3s] [--idle-timeout=60s] [--header-timeout=10s] [ADDR]
//                             (default 127.0.0.1:6380; the flags are serve.h's)
//
// Limits. Redis's: an inline command or a length line is at most 64 KiB
// (PROTO_INLINE_MAX_SIZE), an array at most 1024*1024 elements. Lower than
// Redis's, because a server that only answers PING has no use for more: a
// bulk string is at most 1 MiB (Redis: proto-max-bulk-len, 512 MB), and a
// connection buffers at most 2 MiB of a command (Redis:
// client-query-buffer-limit, 1 GB), which bounds the memory any client can
// make it hold whatever lengths it declares. Past the last one the
// connection is closed without a reply, as Redis does.
#include <charconv>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "serve.h"

namespace {

constexpr std::size_t kMaxInline = 64 * 1024;
constexpr long kMaxArgs = 1024 * 1024;
constexpr long kMaxBulk = 1 << 20;
constexpr std::size_t kMaxQuery = 2 << 20;

// Redis's error reply. Newlines become spaces, as Redis does: the text may
// quote the client, and a CRLF in it would end the reply early and start
// another one of the client's making.
std::string error_reply(std::string text) {
  for (char& ch : text) {
    if (ch == '\r' || ch == '\n') ch = ' ';
  }
  return "-ERR " + text + "\r\n";
}

struct Parsed {
  std::size_t used = 0;  // the command's bytes; 0: not complete yet
  std::string error;     // Redis's reply to malformed input, then close
};

// Parses one command at the front of `in`: a RESP array of bulk strings
// ("*1\r\n$4\r\nPING\r\n") or an inline command ("PING\r\n"), with Redis's
// checks and texts (networking.c). Redis skips the two bytes after a bulk
// string unread; this checks they are CRLF, which Redis has no text for.
Parsed parse_command(std::string_view in, std::vector<std::string_view>* args) {
  args->clear();
  if (in.empty()) return {};
  if (in[0] != '*') {
    const std::size_t end = in.find('\n');
    if (end == std::string_view::npos) {
      return {0, in.size() > kMaxInline ? "Protocol error: too big inline request" : ""};
    }
    std::string_view line = in.substr(0, end);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    for (std::size_t i = 0; i < line.size();) {
      const std::size_t space = line.find(' ', i);
      const std::size_t stop = space == std::string_view::npos ? line.size() : space;
      if (stop > i) args->push_back(line.substr(i, stop - i));
      i = stop + 1;
    }
    return {end + 1, {}};
  }
  // The count line, then `count` bulk strings; i == -1 is the count.
  std::size_t pos = 0;
  long count = 0;
  for (long i = -1; i < count; ++i) {
    const std::size_t end = in.find("\r\n", pos);
    if (end == std::string_view::npos) {
      if (in.size() - pos <= kMaxInline) return {};
      return {0, i < 0 ? "Protocol error: too big mbulk count string"
                       : "Protocol error: too big bulk count string"};
    }
    if (i >= 0 && in[pos] != '$') {
      return {0, std::string("Protocol error: expected '$', got '") + in[pos] + "'"};
    }
    long n = 0;
    const auto [stop, ec] = std::from_chars(in.data() + pos + 1, in.data() + end, n);
    const bool number = ec == std::errc() && stop == in.data() + end;
    pos = end + 2;
    if (i < 0) {
      if (!number || n > kMaxArgs) return {0, "Protocol error: invalid multibulk length"};
      count = n;  // 0 or less: an empty command, which Redis skips
      continue;
    }
    if (!number || n < 0 || n > kMaxBulk) return {0, "Protocol error: invalid bulk length"};
    const auto len = static_cast<std::size_t>(n);
    if (in.size() - pos < len + 2) return {};
    if (in.substr(pos + len, 2) != "\r\n") return {0, "Protocol error: expected CRLF after bulk"};
    args->push_back(in.substr(pos, len));
    pos += len + 2;
  }
  return {pos, {}};
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
    // Redis's text, and its bounds on how much of the client it quotes.
    std::string text =
        "unknown command '" + std::string(args[0].substr(0, 128)) + "', with args beginning with: ";
    std::string quoted;
    for (std::size_t i = 1; i < args.size() && quoted.size() < 128; ++i) {
      // Appended piece by piece: GCC 12 at -O3 reads "'" + std::string(...)
      // as an overlapping memcpy (-Wrestrict, a false positive).
      const std::size_t room = 128 - quoted.size();
      quoted += '\'';
      quoted.append(args[i].substr(0, room));
      quoted += "' ";
    }
    *out += error_reply(text + quoted);
  }
}

void serve_connection(Session& s) {
  std::string in, out;
  std::vector<std::string_view> args;
  char buf[16 * 1024];
  for (;;) {
    auto r = in.empty() ? s.read_request(buf, sizeof buf) : s.read_rest(buf, sizeof buf);
    if (!r) return;  // EOF, an error, shutdown while idle, or a timeout
    in.append(buf, r.count());
    std::size_t start = 0;
    Parsed p;
    while ((p = parse_command(std::string_view(in).substr(start), &args)).used > 0) {
      answer(args, &out);
      start += p.used;
      s.request_done();
    }
    if (!out.empty() && !s.write(out)) return;
    out.clear();
    if (!p.error.empty()) return s.reject(error_reply(p.error));
    if (in.size() - start > kMaxQuery) return;
    in.erase(0, start);
  }
}

}  // namespace

int main(int argc, char** argv) {
  return serve(config_from_args(argc, argv, "127.0.0.1:6380", "weft-resp-ping [FLAGS] [ADDR]"),
               serve_connection);
}
