#include "server/log.h"

#include <syslog.h>

#include <chrono>

namespace popd::server {

void open_log() { ::openlog("popd", LOG_PID | LOG_NDELAY, LOG_MAIL); }

namespace {

std::string escape(std::string_view text, unsigned char lowest_kept) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    if (byte >= lowest_kept && byte < 0x7f && byte != '\\') {
      out += c;
      continue;
    }
    out += "\\x";
    out += hex[byte >> 4];
    out += hex[byte & 15];
  }
  return out;
}

}  // namespace

std::string escaped(std::string_view name) { return escape(name, 0x21); }

std::string printable(std::string_view text) { return escape(text, 0x20); }

namespace {

// When this connection began: popd starts with it.
const auto connection_start = std::chrono::steady_clock::now();

const char* result_of(Ending ending, const protocol::SessionStats& stats) {
  switch (ending) {
    case Ending::quit:
      return stats.commit_failed ? "commit-failed" : stats.too_many_failures ? "auth-failed" : "quit";
    case Ending::timeout: return "timeout";
    case Ending::time_limit: return "time-limit";
    case Ending::closed: return stats.too_many_connections ? "too-many-connections" : "closed";
    case Ending::signal: return "signal";
    case Ending::tls_failed: return "tls-failed";
    case Ending::lost: return "lost";
  }
  return "unknown";
}

}  // namespace

void log_session_end(const std::string& user, const std::string& peer, bool tls,
                     const protocol::SessionStats& stats, Ending ending) {
  std::chrono::duration<double> duration = std::chrono::steady_clock::now() - connection_start;
  auto n = [](std::uint64_t value) { return static_cast<unsigned long long>(value); };
  syslog(LOG_INFO,
         "session end: user=%s rhost=%s tls=%s auth=%s retr=%llu/%llu top=%llu dele=%llu kept=%llu/%llu "
         "duration=%.3f result=%s uidl=%s",
         user.empty() ? "-" : escaped(user).c_str(), or_local(peer), tls ? "yes" : "no",
         stats.auth.empty() ? "-" : stats.auth.c_str(), n(stats.retrieved_messages), n(stats.retrieved_bytes),
         n(stats.top_messages), n(stats.deleted_messages), n(stats.kept_messages), n(stats.kept_bytes),
         duration.count(), result_of(ending, stats), stats.uidl.empty() ? "-" : stats.uidl.c_str());
}

}  // namespace popd::server
