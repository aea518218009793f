#include "mailbox/maildir/deletions.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <map>
#include <set>
#include <optional>
#include <string_view>

#include "mailbox/maildir/checked_file.h"
#include "params.h"
#include "sys/fd.h"
#include "sys/file.h"

namespace popd::mailbox::maildir {
namespace {

// A text file, the user's own (checked_file.h): the Maildir's inode, then
// one line per message ("cur NAME").
constexpr std::string_view magic = "popd-maildir-deletions-1\n";

// Written durably before the first unlink.
bool write_journal(const std::string& journal, std::uint64_t inode, const Listing& listing,
                   const std::vector<bool>& doomed, std::string& error) {
  CheckedFile file(journal, magic);
  file.add("maildir " + std::to_string(inode) + "\n");
  for (std::size_t i = 0; i < listing.size(); ++i) {
    if (!doomed[i]) continue;
    file.add(folder_name(listing[i].folder));
    file.add(" ");
    file.add(listing.name(listing[i]));
    file.add("\n");
  }
  if (file.finish(true, error)) return true;
  error = "recovery journal: " + error;
  return false;
}

// The Maildir's inode, and the messages into `journaled`; nullopt if
// `text` is not a journal of this kind, or damaged.
std::optional<std::uint64_t> decode(std::string_view text, Listing& journaled) {
  auto body = checked_body(text, magic);
  if (!body || !body->starts_with("maildir ")) return std::nullopt;
  std::string_view first = body->substr(8, body->find('\n') - 8);
  std::uint64_t inode = 0;
  if (std::from_chars(first.data(), first.data() + first.size(), inode).ec != std::errc()) return std::nullopt;
  for (std::string_view rest = body->substr(body->find('\n') + 1); !rest.empty();) {
    std::string_view line = rest.substr(0, rest.find('\n'));
    rest.remove_prefix(line.size() + 1);
    if (!line.starts_with("new ") && !line.starts_with("cur ")) return std::nullopt;
    std::string_view name = line.substr(4);
    // A name in its folder, never a path: a forged journal cannot reach outside the Maildir.
    if (name.empty() || name[0] == '.' || name.find('/') != std::string_view::npos) return std::nullopt;
    journaled.add(line[0] == 'n' ? Folder::new_mail : Folder::current, name);
  }
  return inode;
}

bool fail(std::string& error, const std::string& what) {
  error = what + ": " + sys::error_text(errno);
  return false;
}

struct Removed {
  std::uint64_t bytes = 0, count = 0;
};

enum class Unlinked { now, absent, failed };

// Unlinks `name` in `folder`, counting what it removed.
Unlinked unlink_one(int maildir_fd, Folder folder, std::string_view name, Removed& removed) {
  std::string path = std::string(folder_name(folder)) + "/" + std::string(name);
  struct stat st;
  if (::fstatat(maildir_fd, path.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || ::unlinkat(maildir_fd, path.c_str(), 0) != 0)
    return errno == ENOENT ? Unlinked::absent : Unlinked::failed;
  removed.bytes += static_cast<std::uint64_t>(st.st_size);
  ++removed.count;
  return Unlinked::now;
}

// Maildir++ quota: a deletion appends its negative size and count.
void update_quota(int maildir_fd, const Removed& removed) {
  if (removed.count == 0) return;
  // Not a FIFO or a device: one would hold QUIT (and the Maildir's lock).
  sys::UniqueFd fd(::openat(maildir_fd, "maildirsize", O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return;
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

// The messages of `pending` that were not under their recorded names:
// each is found again by its base name in a new listing and unlinked
// there. One that two listings in a row do not show is gone already (a
// single listing can miss a name renamed while it reads the directory).
// false: a listing or an unlink failed, or they kept being renamed.
bool chase_renamed(int maildir_fd, std::vector<std::string> pending, Removed& removed, std::string& error) {
  std::set<std::string, std::less<>> unseen_once;
  for (int round = 0; !pending.empty(); ++round) {
    Listing listing;
    std::string skipped;
    if (round == params::maildir_chases || !scan(maildir_fd, listing, skipped)) {
      error = round == params::maildir_chases ? "messages kept being renamed while they were deleted"
                                              : "cannot list the Maildir: " + sys::error_text(errno);
      return false;
    }
    std::map<std::string_view, const Entry*> by_base;
    for (std::size_t i = 0; i < listing.size(); ++i) by_base.emplace(listing.base(listing[i]), &listing[i]);
    std::vector<std::string> missed;
    for (std::string& base : pending) {
      auto now = by_base.find(base);
      if (now == by_base.end()) {
        if (unseen_once.insert(base).second) missed.push_back(std::move(base));
        continue;
      }
      unseen_once.erase(base);
      switch (unlink_one(maildir_fd, now->second->folder, listing.name(*now->second), removed)) {
        case Unlinked::now: break;
        case Unlinked::absent: missed.push_back(std::move(base)); break;  // renamed again meanwhile
        case Unlinked::failed: error = "cannot delete " + base + ": " + sys::error_text(errno); return false;
      }
    }
    pending = std::move(missed);
  }
  return true;
}

// Unlinks every doomed message, under its new name if it was renamed;
// then syncs the directories, updates the quota and removes the journal.
bool apply(int maildir_fd, const Listing& listing, const std::vector<bool>& doomed, const std::string& journal,
           std::string& error) {
  Removed removed;
  std::vector<std::string> renamed;  // base names
  for (std::size_t i = 0; i < listing.size(); ++i) {
    if (!doomed[i]) continue;
    std::string_view name = listing.name(listing[i]);
    switch (unlink_one(maildir_fd, listing[i].folder, name, removed)) {
      case Unlinked::now: break;
      case Unlinked::absent: renamed.emplace_back(listing.base(listing[i])); break;
      case Unlinked::failed: error = "cannot delete " + std::string(name) + ": " + sys::error_text(errno); return false;
    }
  }
  if (!chase_renamed(maildir_fd, std::move(renamed), removed, error)) return false;
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

bool delete_messages(int maildir_fd, const Listing& listing, const std::vector<bool>& doomed,
                     const std::string& journal, std::string& error) {
  std::string why;
  if (!sys::only_owner_changes_directory_of(journal, ::geteuid(), ::getegid(), why)) {
    error = "the recovery journal's directory can be changed by others: " + why;
    return false;
  }
  if (!write_journal(journal, inode_of(maildir_fd), listing, doomed, error)) return false;
  // From here the deletions go through: now, or at the next session.
  if (!sys::sync_directory_of(journal)) fail(error, "cannot sync the directory of " + journal);
  else if (apply(maildir_fd, listing, doomed, journal, error)) return true;
  error = "deletions may have taken effect, but not all were confirmed (" + error +
          "); the next session completes them";
  return false;
}

Recovered complete_deletions(int maildir_fd, const std::string& journal) {
  sys::OwnFile own = sys::open_own_file(journal, O_RDONLY, ::geteuid());
  if (!own.fd) {
    if (own.error == ENOENT && own.refused.empty()) return {};
    return {false, own.refused.empty() ? "cannot read recovery journal " + journal + ": " + sys::error_text(own.error)
                                       : own.refused};
  }
  if (static_cast<std::uint64_t>(own.st.st_size) > params::maildir_list_limit)
    return {false, "recovery journal " + journal + " is too large; see popd(8), RECOVERY"};
  std::string text(static_cast<std::size_t>(own.st.st_size), '\0');
  if (!sys::pread_all(own.fd.get(), text.data(), text.size(), 0))
    return {false, "cannot read recovery journal " + journal + ": " + sys::error_text(errno)};
  Listing journaled;
  auto inode = decode(text, journaled);
  if (!inode)
    return {false, "recovery journal " + journal + " is not a Maildir's or is damaged; see popd(8), RECOVERY"};
  if (*inode != inode_of(maildir_fd))
    return {false, "recovery journal " + journal + " is for another Maildir; see popd(8), RECOVERY"};
  std::string error;
  if (!apply(maildir_fd, journaled, std::vector<bool>(journaled.size(), true), journal, error))
    return {false, "completing deletions: " + error};
  return {true,
          "completed the deletions of an interrupted session (" + std::to_string(journaled.size()) + " messages)"};
}

}  // namespace popd::mailbox::maildir
