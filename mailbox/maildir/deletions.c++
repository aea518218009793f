#include "mailbox/maildir/deletions.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <map>
#include <set>
#include <optional>
#include <string_view>

#include <xxhash.h>

#include "params.h"
#include "sys/fd.h"
#include "sys/file.h"

namespace popd::mailbox::maildir {
namespace {

// A text file, the user's own: the magic, the Maildir's inode, one line
// per message ("cur NAME"), and an XXH3-64 of all that before it, against
// a torn write.
constexpr std::string_view magic = "popd-maildir-deletions-1\n";

std::string checksum_line(std::string_view text) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(XXH3_64bits(text.data(), text.size())));
  return std::string("end ") + hex + "\n";
}

std::string encode(std::uint64_t inode, const std::vector<Doomed>& doomed) {
  std::string text(magic);
  text += "maildir " + std::to_string(inode) + "\n";
  for (const Doomed& d : doomed) text += std::string(folder_name(d.folder)) + " " + d.name + "\n";
  return text + checksum_line(text);
}

// nullopt: not a journal of this kind, or damaged.
std::optional<std::pair<std::uint64_t, std::vector<Doomed>>> decode(std::string_view text) {
  if (!text.starts_with(magic) || text.size() < 21 || !text.ends_with("\n")) return std::nullopt;
  auto last = text.rfind('\n', text.size() - 2);
  if (last == std::string_view::npos || text.substr(last + 1) != checksum_line(text.substr(0, last + 1)))
    return std::nullopt;
  std::string_view body = text.substr(magic.size(), last + 1 - magic.size());
  std::uint64_t inode = 0;
  std::vector<Doomed> doomed;
  bool first = true;
  while (!body.empty()) {
    auto newline = body.find('\n');
    std::string_view line = body.substr(0, newline);
    body.remove_prefix(newline + 1);
    if (first) {
      if (!line.starts_with("maildir ")) return std::nullopt;
      auto digits = line.substr(8);
      if (std::from_chars(digits.data(), digits.data() + digits.size(), inode).ec != std::errc()) return std::nullopt;
      first = false;
    } else if (line.starts_with("new ") || line.starts_with("cur ")) {
      doomed.push_back({line[0] == 'n' ? Folder::new_mail : Folder::current, std::string(line.substr(4))});
    } else {
      return std::nullopt;
    }
  }
  return std::pair{inode, std::move(doomed)};
}

bool fail(std::string& error, const std::string& what) {
  error = what + ": " + sys::error_text(errno);
  return false;
}

struct Removed {
  std::uint64_t bytes = 0, count = 0;
};

// Unlinks `name` in `folder`; false on an error other than its absence.
bool unlink_one(int maildir_fd, Folder folder, const std::string& name, bool& found, Removed& removed) {
  std::string path = std::string(folder_name(folder)) + "/" + name;
  struct stat st;
  found = ::fstatat(maildir_fd, path.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (!found) return errno == ENOENT;
  if (::unlinkat(maildir_fd, path.c_str(), 0) != 0) {
    if (errno != ENOENT) return false;
    found = false;
    return true;
  }
  removed.bytes += static_cast<std::uint64_t>(st.st_size);
  ++removed.count;
  return true;
}

// Maildir++ quota: a deletion appends its negative size and count.
void update_quota(int maildir_fd, const Removed& removed) {
  if (removed.count == 0) return;
  sys::UniqueFd fd(::openat(maildir_fd, "maildirsize", O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return;
  std::string line = "-" + std::to_string(removed.bytes) + " -" + std::to_string(removed.count) + "\n";
  [[maybe_unused]] bool written = sys::write_all(fd.get(), line);
}

bool sync_folders(int maildir_fd) {
  for (Folder folder : {Folder::new_mail, Folder::current}) {
    sys::UniqueFd fd(::openat(maildir_fd, folder_name(folder), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd || ::fsync(fd.get()) != 0) return false;
  }
  return true;
}

// Unlinks every doomed message, under its new name if it was renamed
// (found by listing the Maildir again); one that two listings in a row do
// not show is gone already. Then syncs the directories, updates the quota
// and removes the journal.
bool apply(int maildir_fd, const std::vector<Doomed>& doomed, const std::string& journal, std::string& error) {
  Removed removed;
  std::vector<Doomed> pending;
  for (const Doomed& d : doomed) {
    bool found;
    if (!unlink_one(maildir_fd, d.folder, d.name, found, removed)) return fail(error, "cannot delete " + d.name);
    if (!found) pending.push_back(d);
  }
  std::set<std::string, std::less<>> unseen_once;
  for (int round = 0; !pending.empty() && round < 2 * params::maildir_scans; ++round) {
    Listing listing;
    std::string skipped;
    if (!scan(maildir_fd, listing, skipped)) return fail(error, "cannot list the Maildir");
    std::map<std::string_view, const Entry*> by_base;
    for (std::size_t i = 0; i < listing.size(); ++i) by_base.emplace(listing.base(listing[i]), &listing[i]);
    std::vector<Doomed> missed;
    for (Doomed& d : pending) {
      std::string base(parse_name(d.name).base);
      auto now = by_base.find(base);
      if (now == by_base.end()) {
        if (unseen_once.insert(base).second) missed.push_back(std::move(d));  // gone, if the next listing agrees
        continue;
      }
      unseen_once.erase(base);
      Doomed current{now->second->folder, std::string(listing.name(*now->second))};
      bool found;
      if (!unlink_one(maildir_fd, current.folder, current.name, found, removed))
        return fail(error, "cannot delete " + current.name);
      if (!found) missed.push_back(std::move(current));  // renamed again meanwhile
    }
    pending = std::move(missed);
  }
  if (!pending.empty()) {
    errno = EAGAIN;
    return fail(error, "messages kept being renamed while they were deleted");
  }
  if (!sync_folders(maildir_fd)) return fail(error, "cannot sync the Maildir");
  update_quota(maildir_fd, removed);
  if (::unlink(journal.c_str()) != 0 && errno != ENOENT) return fail(error, "cannot remove journal " + journal);
  if (!sys::sync_directory_of(journal)) return fail(error, "cannot sync the directory of " + journal);
  return true;
}

std::uint64_t inode_of(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
}

}  // namespace

bool delete_messages(int maildir_fd, const std::vector<Doomed>& doomed, const std::string& journal,
                     std::string& error) {
  if (doomed.empty()) return true;
  std::string why;
  if (!sys::only_owner_changes_directory_of(journal, ::geteuid(), ::getegid(), why)) {
    error = "the recovery journal's directory can be changed by others: " + why;
    return false;
  }
  std::string temporary = journal + ".new";
  ::unlink(temporary.c_str());
  sys::UniqueFd fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return fail(error, "cannot create recovery journal " + temporary);
  if (!sys::write_all(fd.get(), encode(inode_of(maildir_fd), doomed)) || ::fdatasync(fd.get()) != 0 ||
      ::rename(temporary.c_str(), journal.c_str()) != 0) {
    int cause = errno;
    ::unlink(temporary.c_str());
    errno = cause;
    return fail(error, "cannot write recovery journal " + journal);
  }
  // From here the deletions go through: now, or at the next session.
  if (!sys::sync_directory_of(journal) || !apply(maildir_fd, doomed, journal, error)) {
    if (error.empty()) fail(error, "cannot sync the directory of " + journal);
    error = "deletions may have taken effect, but not all were confirmed (" + error +
            "); the next session completes them";
    return false;
  }
  return true;
}

Recovered complete_deletions(int maildir_fd, const std::string& journal) {
  sys::OwnFile own = sys::open_own_file(journal, O_RDONLY, ::geteuid());
  if (!own.fd) {
    if (own.error == ENOENT && own.refused.empty()) return {};
    return {false, own.refused.empty() ? "cannot read recovery journal " + journal + ": " + sys::error_text(own.error)
                                       : own.refused};
  }
  std::string text(static_cast<std::size_t>(own.st.st_size), '\0');
  if (!sys::pread_all(own.fd.get(), text.data(), text.size(), 0))
    return {false, "cannot read recovery journal " + journal + ": " + sys::error_text(errno)};
  auto decoded = decode(text);
  if (!decoded)
    return {false, "recovery journal " + journal + " is not a Maildir's or is damaged; see popd(8), RECOVERY"};
  if (decoded->first != inode_of(maildir_fd))
    return {false, "recovery journal " + journal + " is for another Maildir; see popd(8), RECOVERY"};
  std::string error;
  if (!apply(maildir_fd, decoded->second, journal, error)) return {false, "completing deletions: " + error};
  return {true, "completed the deletions of an interrupted session (" + std::to_string(decoded->second.size()) +
                    " messages)"};
}

}  // namespace popd::mailbox::maildir
