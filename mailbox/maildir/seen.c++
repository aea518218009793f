#include "mailbox/maildir/seen.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

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
  for (std::size_t i = 0; i < listing.size() && i < read.size(); ++i) {
    if (!read[i]) continue;
    const Entry& entry = listing[i];
    auto name = seen_name(entry.folder, listing.name(entry));
    if (!name) continue;
    std::string from = std::string(folder_name(entry.folder)) + "/" + std::string(listing.name(entry));
    std::string to = "cur/" + *name;
    // Never over another file: one of that name is the same message,
    // renamed by a reader meanwhile.
    if (::renameat2(maildir_fd, from.c_str(), maildir_fd, to.c_str(), RENAME_NOREPLACE) == 0 || errno != EINVAL)
      continue;
    // Left in both folders if the unlink fails: a listing keeps cur/'s.
    if (::linkat(maildir_fd, from.c_str(), maildir_fd, to.c_str(), 0) == 0) ::unlinkat(maildir_fd, from.c_str(), 0);
  }
}

}  // namespace popd::mailbox::maildir
