// Files: whole-buffer reads and writes that retry short transfers and
// EINTR, directories and who may change them, waiting for input, and the
// rule by which a per-user state file is trusted (open_own_file).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "sys/fd.h"

namespace popd::sys {

// Each returns false with errno set on failure.
bool pread_all(int fd, char* buffer, std::size_t size, std::uint64_t offset);
bool pwrite_all(int fd, std::string_view data, std::uint64_t offset);
bool write_all(int fd, std::string_view data);
// The directory that holds `path`.
std::string directory_of(const std::string& path);
// fsync of the directory that holds `path`, so that a new or removed name in
// it is durable.
bool sync_directory_of(const std::string& path);
std::string error_text(int error_number);

// Whether only `owner` (with group `group`) and root can add, remove or
// rename the entries of the directory that holds `path`: one another user
// could write would let that user put back an old file of the owner's
// (a journal the owner's commit never used) or take one away. The
// directory is the owner's or root's and writable by nobody else, but by
// the owner's own group (a user private group) or where it is sticky.
// `why` says what is wrong when it is not.
bool only_owner_changes_directory_of(const std::string& path, uid_t owner, gid_t group, std::string& why);

// Waits for `fd` to be readable (or at its end) until `deadline`.
bool wait_readable(int fd, std::chrono::steady_clock::time_point deadline);

// A per-user state file (the recovery journal, the index, the UIDVALIDITY
// file) may lie where others can write (a group-shared home, a shared
// --journal directory): it is trusted only if it is a regular file that
// `owner` owns, with one name, opened without following a symbolic link
// (and without blocking on a FIFO).
struct OwnFile {
  UniqueFd fd;          // open: the file is `owner`'s own ...
  struct stat st {};    // ... as fstat found it
  int error = 0;        // else the open's errno (ENOENT: there is none) ...
  std::string refused;  // ... or why the file there is not trusted
};
OwnFile open_own_file(const std::string& path, int flags, uid_t owner);

// The whole of such a file, if it holds at most `limit` bytes: empty with
// no note where there is none; empty with `note` (naming the path) where
// it is not trusted, too large or unreadable.
struct OwnText {
  std::string text;
  std::string note;
  bool refused = false;  // not the owner's own file (open_own_file): leave it be
  struct stat st {};     // as fstat found it, when read
};
OwnText read_own_file(const std::string& path, uid_t owner, std::uint64_t limit);

// Replaces the file at `path` whole with `text`, as the calling user: it
// is written beside it (PATH.XXXXXX, a name of its own that another user
// of a shared directory cannot take first), and renamed over it, so that
// it is the old file or the new one, never a torn one; with `sync`, the
// file before the rename and its directory after, so that the new one
// survives a power cut. false with `error` if it could not.
bool replace_file(const std::string& path, std::string_view text, bool sync, std::string& error);

}  // namespace popd::sys
