#include "mailbox/maildir/old_ids.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <charconv>
#include <optional>
#include <utility>

#include "mailbox/maildir/listing.h"
#include "params.h"
#include "sys/fd.h"
#include "sys/file.h"

namespace popd::mailbox::maildir {
namespace {

std::optional<std::uint64_t> number(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::string_view next_word(std::string_view& text) {
  auto space = text.find(' ');
  std::string_view word = text.substr(0, space);
  text.remove_prefix(space == std::string_view::npos ? text.size() : space + 1);
  return word;
}

template <typename F>
void each_line(std::string_view text, F&& f) {
  while (!text.empty()) {
    auto newline = text.find('\n');
    f(text.substr(0, newline));
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
  }
}

// A Maildir's own file, read whole; empty if it is not there, not a
// regular file (never followed out of the Maildir), or too large.
std::string read_list(int maildir_fd, const char* name) {
  sys::UniqueFd fd(::openat(maildir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::uint64_t>(st.st_size) > params::maildir_list_limit)
    return {};
  std::string text(static_cast<std::size_t>(st.st_size), '\0');
  if (!sys::pread_all(fd.get(), text.data(), text.size(), 0)) return {};
  return text;
}

}  // namespace

// Version 3 (and 2): "3 V<uidvalidity> N<next uid> G<guid>", then
// "<uid> [<key><value> ...] :<file name>"; version 1: "1 <uidvalidity>
// <next uid>", then "<uid> <file name>".
KnownIds parse_dovecot_uidlist(std::string_view text) {
  KnownIds ids;
  std::string_view header = text.substr(0, text.find('\n'));
  std::string_view fields = header;
  auto version = number(next_word(fields));
  if (!version || *version < 1 || *version > 3) return ids;
  std::optional<std::uint64_t> validity;
  if (*version == 1) {
    validity = number(next_word(fields));
  } else {
    while (!fields.empty()) {
      std::string_view field = next_word(fields);
      if (field.starts_with('V')) validity = number(field.substr(1));
    }
  }
  if (!validity || *validity > 0xffffffffu) return ids;
  bool first = true;
  each_line(text, [&](std::string_view line) {
    if (std::exchange(first, false)) return;
    auto uid = number(next_word(line));
    if (!uid || *uid == 0 || *uid > 0xffffffffu) return;
    std::string_view name = line, saved;
    if (*version > 1) {
      auto colon = line.find(':');
      if (colon == std::string_view::npos) return;
      std::string_view extensions = line.substr(0, colon);
      name = line.substr(colon + 1);
      while (!extensions.empty()) {
        std::string_view field = next_word(extensions);
        if (field.starts_with('P')) saved = field.substr(1);  // the POP3 UIDL it saved
      }
    }
    std::string_view base = parse_name(name).base;
    if (base.empty()) return;
    std::string id = valid_uid(saved) ? std::string(saved) : format_old_id(UidScheme::dovecot, *uid,
                                                                            static_cast<std::uint32_t>(*validity));
    ids.insert_or_assign(std::string(base), KnownId{std::move(id), *uid});
  });
  return ids;
}

// "/3 <next uid> <uidvalidity>" (or /2), then "<file name> <size>
// <uid>:<uidvalidity>[:<utf8>]"; Courier's UIDL is "UID<uid>-<uidvalidity>",
// or "UID<uid>" where the UIDVALIDITY is 0.
KnownIds parse_courier_sizelist(std::string_view text) {
  KnownIds ids;
  if (!text.starts_with("/3 ") && !text.starts_with("/2 ")) return ids;
  bool first = true;
  each_line(text, [&](std::string_view line) {
    if (std::exchange(first, false)) return;
    auto last = line.rfind(' ');
    if (last == std::string_view::npos) return;
    std::string_view uid_field = line.substr(last + 1);
    std::string_view rest = line.substr(0, last);
    auto size_at = rest.rfind(' ');
    if (size_at == std::string_view::npos || size_at == 0) return;
    std::string_view name = rest.substr(0, size_at);
    std::string_view parts = uid_field;
    auto colon = parts.find(':');
    if (colon == std::string_view::npos) return;
    auto uid = number(parts.substr(0, colon));
    parts.remove_prefix(colon + 1);
    auto validity = number(parts.substr(0, parts.find(':')));
    if (!uid || !validity || *uid == 0) return;
    std::string id = "UID" + std::to_string(*uid) + (*validity ? "-" + std::to_string(*validity) : "");
    ids.insert_or_assign(std::string(parse_name(name).base), KnownId{std::move(id), *uid});
  });
  return ids;
}

KnownIds read_old_ids(int maildir_fd, UidScheme scheme) {
  if (scheme == UidScheme::dovecot) return parse_dovecot_uidlist(read_list(maildir_fd, "dovecot-uidlist"));
  if (scheme == UidScheme::courier) return parse_courier_sizelist(read_list(maildir_fd, "courierpop3dsizelist"));
  return {};
}

}  // namespace popd::mailbox::maildir
