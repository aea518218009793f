#include "auth/passwd_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <map>

#include "params.h"
#include "sys/fd.h"
#include "sys/file.h"

namespace popd::auth {
namespace {

std::optional<std::uint32_t> id_field(std::string_view field, bool& bad) {
  if (field.empty()) return std::nullopt;
  std::uint32_t id = 0;
  auto [end, error] = std::from_chars(field.data(), field.data() + field.size(), id);
  if (error != std::errc() || end != field.data() + field.size() || id == static_cast<std::uint32_t>(-1)) bad = true;
  return id;
}

// What makes two fields cost the same to check: the scheme and the
// parameters before the salt ("{SHA512-CRYPT}$6$rounds=5000", "$2y$05",
// "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1").
std::string cost_of(std::string_view password) {
  std::size_t last = password.rfind('$');
  if (last == std::string_view::npos || last == 0) return std::string(password.substr(0, password.find('}') + 1));
  // bcrypt's salt and hash are one part: "$2y$05$SALTHASH".
  std::string_view hash = password.substr(password.find('}') + 1);
  if (hash.size() > 3 && hash.starts_with("$2") && hash[3] == '$') return std::string(password.substr(0, last));
  std::size_t before = password.rfind('$', last - 1);
  return std::string(password.substr(0, before == std::string_view::npos ? last : before));
}

// The file's text, if root's and writable by root alone (a group other
// than root's may read it, as Dovecot's documentation asks: root:dovecot
// 0640).
std::optional<std::string> read_trusted(const std::string& path, PasswdLookup& lookup) {
  std::string why;
  if (!sys::only_owner_changes_directory_of(path, 0, 0, why)) {
    // A directory that is not there (a domain without one, with %d in a
    // directory's name) is as a missing file: an unknown user's answer.
    struct stat st;
    std::string directory = path.substr(0, path.rfind('/') + 1);
    lookup.missing = ::stat(directory.c_str(), &st) != 0 && (errno == ENOENT || errno == ENOTDIR);
    lookup.error = path + (lookup.missing ? ": no such directory" : ": its directory can be changed by others: " + why);
    return std::nullopt;
  }
  sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) != 0) {
    lookup.missing = errno == ENOENT;
    lookup.error = path + ": " + sys::error_text(errno);
    return std::nullopt;
  }
  if (!S_ISREG(st.st_mode) || st.st_uid != 0 || (st.st_mode & S_IWOTH) || ((st.st_mode & S_IWGRP) && st.st_gid != 0)) {
    lookup.error = path + ": not a regular file of root's that only root can write";
    return std::nullopt;
  }
  if (static_cast<std::uint64_t>(st.st_size) > params::max_passwd_file) {
    lookup.error = path + ": larger than " + std::to_string(params::max_passwd_file) + " bytes";
    return std::nullopt;
  }
  if (st.st_mode & S_IROTH) lookup.warnings.push_back(path + ": every user can read its password hashes");
  std::string text(static_cast<std::size_t>(st.st_size), '\0');
  if (!sys::pread_all(fd.get(), text.data(), text.size(), 0)) {
    lookup.error = path + ": " + sys::error_text(errno);
    return std::nullopt;
  }
  return text;
}

}  // namespace

std::optional<PasswdEntry> parse_entry(std::string_view line) {
  PasswdEntry entry;
  if (line.empty() || line.starts_with('#')) return entry;
  std::string_view fields[7];
  std::size_t count = 0;
  for (std::string_view rest = line; count < 7;) {
    std::size_t colon = rest.find(':');
    fields[count++] = rest.substr(0, colon);
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  // The 8th field on (extra fields) may hold ':' and is not used yet.
  if (count < 2 || fields[0].empty()) return std::nullopt;
  bool bad = false;
  entry.user = fields[0];
  entry.password = fields[1];
  entry.uid = id_field(fields[2], bad);
  entry.gid = id_field(fields[3], bad);
  entry.home = fields[5];
  if (bad) return std::nullopt;
  return entry;
}

PasswdLookup find_user(const std::string& path, std::string_view user) {
  PasswdLookup lookup;
  auto text = read_trusted(path, lookup);
  if (!text) {
    lookup.result = PasswdLookup::Result::failed;
    return lookup;
  }
  std::map<std::string, std::pair<std::size_t, std::string>> costs;  // cost -> how many, a field of it
  std::size_t number = 0;
  for (std::string_view rest = *text; !rest.empty();) {
    std::string_view line = rest.substr(0, rest.find('\n'));
    rest.remove_prefix(std::min(rest.size(), line.size() + 1));
    if (line.ends_with('\r')) line.remove_suffix(1);
    ++number;
    auto entry = parse_entry(line);
    if (entry && entry->user.empty()) continue;  // a comment
    std::string_view name = entry ? std::string_view(entry->user) : line.substr(0, line.find(':'));
    if (entry && !entry->password.empty()) {
      auto& [count, field] = costs[cost_of(entry->password)];
      if (count++ == 0) field = entry->password;
    }
    if (name != user || lookup.result != PasswdLookup::Result::unknown || !lookup.error.empty()) continue;
    if (!entry) {
      lookup.error = path + ":" + std::to_string(number) + ": malformed entry";
      continue;
    }
    lookup.result = PasswdLookup::Result::found;
    lookup.entry = std::move(*entry);
    lookup.entry.line = number;
  }
  std::size_t most = 0;
  for (auto& [cost, seen] : costs)
    if (seen.first > most) most = seen.first, lookup.dummy_password = seen.second;
  return lookup;
}

}  // namespace popd::auth
