#include "server/log.h"

#include <syslog.h>

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

}  // namespace popd::server
