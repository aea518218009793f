#include "mailbox/maildir/seen.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "sys/fd.h"

namespace popd::mailbox::maildir {

std::optional<std::string> seen_name(Folder folder, std::string_view name) {
  std::size_t colon = name.find(':');
  std::string_view info = colon == std::string_view::npos ? ":2," : name.substr(colon);
  if (!info.starts_with(":2,")) return std::nullopt;
  std::string flags(info.substr(3));
  if (flags.find('S') != std::string::npos) {
    if (folder == Folder::current) return std::nullopt;
  } else {
    flags.insert(std::upper_bound(flags.begin(), flags.end(), 'S'), 'S');
  }
  return std::string(name.substr(0, colon)) + ":2," + flags;
}

void mark_seen(int maildir_fd, const Listing& listing, const std::vector<bool>& read) {
  // The folders as they are now, never through a symbolic link: a Maildir
  // others may change must not let them redirect the user's mail.
  sys::UniqueFd folders[2];
  for (Folder folder : {Folder::new_mail, Folder::current})
    folders[static_cast<int>(folder)].reset(
        ::openat(maildir_fd, folder_name(folder), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  int cur = folders[static_cast<int>(Folder::current)].get();
  for (std::size_t i = 0; i < listing.size() && i < read.size(); ++i) {
    if (!read[i]) continue;
    const Entry& entry = listing[i];
    auto name = seen_name(entry.folder, listing.name(entry));
    int from_fd = folders[static_cast<int>(entry.folder)].get();
    std::string from(listing.name(entry));
    struct stat st;
    // A second name is a reader's move (link, then unlink) under way: left to it.
    if (!name || from_fd < 0 || cur < 0 || ::fstatat(from_fd, from.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        st.st_nlink != 1)
      continue;
    // Never over another file: one of that name is the same message,
    // renamed by a reader meanwhile.
    if (::renameat2(from_fd, from.c_str(), cur, name->c_str(), RENAME_NOREPLACE) == 0 || errno != EINVAL) continue;
    // Left in both folders if the unlink fails: a listing keeps cur/'s.
    if (::linkat(from_fd, from.c_str(), cur, name->c_str(), 0) == 0) ::unlinkat(from_fd, from.c_str(), 0);
  }
}

}  // namespace popd::mailbox::maildir
