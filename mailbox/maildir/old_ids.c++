#include "mailbox/maildir/old_ids.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <vector>
#include <optional>
#include <utility>

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
void each_dovecot_id(std::string_view text, const IdSink& sink) {
  std::string_view header = text.substr(0, text.find('\n'));
  std::string_view fields = header;
  auto version = number(next_word(fields));
  if (!version || *version < 1 || *version > 3) return;
  std::optional<std::uint64_t> validity;
  if (*version == 1) {
    validity = number(next_word(fields));
  } else {
    while (!fields.empty()) {
      std::string_view field = next_word(fields);
      if (field.starts_with('V')) validity = number(field.substr(1));
    }
  }
  if (!validity || *validity > 0xffffffffu) return;
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
    sink(base, std::move(id), *uid);
  });
}

// "/3 <next uid> <uidvalidity>" (or /2), then "<file name> <size>
// <uid>:<uidvalidity>[:<utf8>]"; Courier's UIDL is "UID<uid>-<uidvalidity>",
// or "UID<uid>" where the UIDVALIDITY is 0.
void each_courier_id(std::string_view text, const IdSink& sink) {
  if (!text.starts_with("/3 ") && !text.starts_with("/2 ")) return;
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
    sink(parse_name(name).base, std::move(id), *uid);
  });
}

void adopt_old_ids(int maildir_fd, UidScheme scheme, Listing& listing) {
  if (scheme != UidScheme::dovecot && scheme != UidScheme::courier) return;
  std::string text = read_list(maildir_fd, scheme == UidScheme::dovecot ? "dovecot-uidlist" : "courierpop3dsizelist");
  if (text.empty() || listing.size() == 0) return;
  // The listing's entries by base name, to find each line's message.
  std::vector<std::uint32_t> by_base(listing.size());
  for (std::uint32_t i = 0; i < by_base.size(); ++i) by_base[i] = i;
  auto base_of = [&](std::uint32_t i) { return listing.base(listing[i]); };
  std::sort(by_base.begin(), by_base.end(), [&](auto a, auto b) { return base_of(a) < base_of(b); });
  auto adopt = [&](std::string_view base, std::string id, std::uint64_t order) {
    auto at = std::lower_bound(by_base.begin(), by_base.end(), base,
                               [&](std::uint32_t i, std::string_view key) { return base_of(i) < key; });
    if (at != by_base.end() && base_of(*at) == base) listing.set_old_id(listing[*at], id, order);
  };
  if (scheme == UidScheme::dovecot) each_dovecot_id(text, adopt);
  else each_courier_id(text, adopt);
  // RFC 1939: no two messages share an id. Where a list gives two the
  // same, the one later in the server's order keeps its own.
  std::vector<std::uint32_t> known;
  for (std::uint32_t i = 0; i < listing.size(); ++i)
    if (!listing.old_id(listing[i]).empty()) known.push_back(i);
  std::stable_sort(known.begin(), known.end(), [&](auto a, auto b) {
    return std::pair(listing.old_id(listing[a]), listing[a].sort_key) <
           std::pair(listing.old_id(listing[b]), listing[b].sort_key);
  });
  for (std::size_t k = 1; k < known.size(); ++k)
    if (listing.old_id(listing[known[k]]) == listing.old_id(listing[known[k - 1]]))
      listing.set_old_id(listing[known[k]], {}, 0);
  listing.order_by_old_ids();
}

}  // namespace popd::mailbox::maildir
