// The index: what parse() found in a spool, kept in the user's home
// (--index) so that a login does not read a large spool again. It is a
// cache, never trusted unchecked and never written into the spool: it is
// used only if its checksum holds, the spool has the same device and inode
// and is no shorter, and every recorded message still starts with the same
// From_ line after a line end. If the spool is longer, only the last known
// message and what follows it are parsed; if it has the same size, its
// mtime and ctime must be unchanged too (ctime cannot be set back). See
// popd.8, INDEX.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>

#include "mailbox/mbox/mbox.h"

namespace popd::mailbox {

// What tells one version of a file from another.
struct FileState {
  std::uint64_t device = 0, inode = 0, size = 0;
  std::int64_t mtime_sec = 0, mtime_nsec = 0, ctime_sec = 0, ctime_nsec = 0;

  static FileState of(const struct stat& st);
  bool operator==(const FileState&) const = default;
};

// The index at `path` for the spool open at `fd`, whose state is `now`:
// what parse() found in its first `end` bytes (all of it, or less if mail
// was appended since) for `scheme`, or nothing if there is no index it can
// trust.
std::optional<Mbox> load_index(const std::string& path, int fd, const FileState& now,
                               UidScheme scheme = UidScheme::popd);

// Saves `box`, the parse of the spool when it was in `state`, over the
// index at `path` in place (a regular file of the user's with one name;
// anything else there is replaced by a new file). In place, not through a
// new file renamed over it: ext4 starts writing out a file renamed over
// another at once (auto_da_alloc), which a session's end would wait for,
// and a full disk still takes an overwrite. Not synced: a lost or torn
// index fails its checksum, and the next login parses the spool.
bool save_index(const std::string& path, const Mbox& box, const FileState& state, std::string& error);

}  // namespace popd::mailbox
