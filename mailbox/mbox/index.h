// The index: what parse() found in a spool, kept in the user's home
// (--index) so that a login does not read a large spool again. It is a
// cache, never written into the spool: it is used only if its checksum
// holds and the spool has the same device and inode and is no shorter.
// What it says is trusted by the spool's state (load_index), never for what
// a session sends or rewrites, which is checked when it is touched. If the
// spool is longer, only the last known message and what follows it are
// parsed. See popd.8, INDEX.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>

#include "mailbox/file_window.h"
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
//
// Where the spool's state is exactly the recorded one (device, inode,
// size, mtime and ctime to the nanosecond: every write moves ctime, and no
// one can set it), the index is trusted without reading the spool, and
// `lazily` is set: what is sent or rewritten is checked when it is touched
// (record_unchanged). Where the spool grew, only the last known message is
// checked here. In full, every From_ line, when `verify_all` (a shared
// spool, whose times another host's clock writes) or when the index was
// saved within a timestamp's granularity of the spool's last change (it
// could have missed a change in the same tick: git's "racy" case).
std::optional<Mbox> load_index(const std::string& path, int fd, const FileState& now,
                               UidScheme scheme = UidScheme::popd, bool verify_all = true, bool* lazily = nullptr);

// Whether message `index` of `box` is still where the parse found it, in
// the spool open at `fd`: it starts, after a line end, with the From_ line
// that was parsed, and so does the next (its end). Through `window`, which
// the caller keeps, so that messages read one after another share it.
bool message_in_place(FileWindow& window, int fd, const Mbox& box, std::size_t index);
// The same for messages[first] and all after it, through one moving window.
bool records_unchanged_from(int fd, std::uint64_t size, const Messages& messages, std::size_t first);

// Saves `box`, the parse of the spool when it was in `state`, over the
// index at `path` in place (a regular file of the user's with one name;
// anything else there is replaced by a new file). In place, not through a
// new file renamed over it: ext4 starts writing out a file renamed over
// another at once (auto_da_alloc), which a session's end would wait for,
// and a full disk still takes an overwrite. Not synced: a lost or torn
// index fails its checksum, and the next login parses the spool.
// `observed_ns`: when `state` was taken (CLOCK_REALTIME, ns; now if not
// given): an index whose spool changed less than a timestamp tick before
// that is racy, checked in full at the next login.
bool save_index(const std::string& path, const Mbox& box, const FileState& state, std::string& error,
                std::optional<std::int64_t> observed_ns = std::nullopt);
// CLOCK_REALTIME in nanoseconds.
std::int64_t now_ns();

}  // namespace popd::mailbox
