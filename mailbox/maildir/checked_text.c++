#include "mailbox/maildir/checked_text.h"

#include <cstdio>

#include <xxhash.h>

namespace popd::mailbox::maildir {
namespace {

std::string end_line(std::string_view text) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(XXH3_64bits(text.data(), text.size())));
  return std::string("end ") + hex + "\n";
}

}  // namespace

std::string checked_text(std::string_view magic, std::string_view body) {
  std::string text(magic);
  text += body;
  seal(text);
  return text;
}

void seal(std::string& text) { text += end_line(text); }

std::optional<std::string_view> checked_body(std::string_view text, std::string_view magic) {
  if (!text.starts_with(magic) || !text.ends_with('\n') || text.size() < magic.size() + end_line("").size())
    return std::nullopt;
  std::size_t body_end = text.size() - end_line("").size();
  if (text.substr(body_end) != end_line(text.substr(0, body_end))) return std::nullopt;
  return text.substr(magic.size(), body_end - magic.size());
}

}  // namespace popd::mailbox::maildir
