// Locking a spool the way Debian's MDAs expect (procmail, postfix local,
// liblockfile's dotlockfile, mutt): a dotlock "<mailbox>.lock" made with
// liblockfile (NFS-safe; where the spool directory is not writable by the
// user, by the monitor as the user with the directory's group, see
// spool_directory_group, or else through liblockfile's setgid helper), and
// an fcntl write lock on the mailbox itself.
#pragma once

#include <sys/types.h>
#include <time.h>

#include <optional>
#include <string>

namespace popd::mailbox {

enum class LockStatus { locked, busy, failed };

class DotLock {
 public:
  DotLock() = default;
  DotLock(DotLock&& other) noexcept;
  DotLock& operator=(DotLock&& other) noexcept;
  ~DotLock();

  // Waits up to params::lock_wait for "<mailbox>.lock". A stale lock is
  // taken over, and `note` says so: one whose process is gone, or one
  // older than 5 minutes without a pid; on a `shared` spool (other hosts
  // lock it too, see on_shared_file_system) only one older than 5 minutes,
  // since a pid says nothing about a lock another host made, and this
  // lock names no pid either.
  static LockStatus acquire(const std::string& mailbox, DotLock& lock, std::string& error, std::string& note,
                            bool shared = false);
  // The dotlock of `mailbox` that another process (the monitor) took and
  // keeps fresh, and will remove: this one neither refreshes nor removes it.
  static DotLock held_elsewhere(const std::string& mailbox);
  // Keeps the lock fresh: others take a dotlock older than 5 minutes as
  // stale. A lock at the name that is no longer this one is left alone.
  void refresh();
  // Removes the lock, if the file at its name is still the one made.
  void release();
  bool held() const { return !path_.empty(); }

 private:
  // The file at path_ is still the lock this one made (or was given): the
  // same inode, changed last by this one (a lock taken over is a new file,
  // made at least 5 minutes after the last refresh, and an inode number
  // may be used again at once).
  bool still_ours() const;
  void remember();

  std::string path_;
  bool owner_ = false;
  dev_t device_ = 0;
  ino_t inode_ = 0;
  timespec changed_{};
};

// Whether the spool directory of `mailbox` is on a file system other hosts
// may share (NFS, SMB/CIFS, AFS, Ceph, GlusterFS and others through FUSE,
// 9P, GFS2, OCFS2, Lustre), by statfs; also where statfs cannot tell
// (but for a directory that does not exist). popd.8, NFS.
bool on_shared_file_system(const std::string& mailbox);

// The group that may create files in the directory of `mailbox` when the
// user cannot, so that a session could take the dotlock only through
// liblockfile's setgid helper: a directory that root owns, that its group
// (not root's) may write and others may not, below directories only root
// can change (or sticky ones). Nothing for any other place.
std::optional<gid_t> spool_directory_group(const std::string& mailbox);

// Waits up to params::lock_wait for a write lock on all of fd: fcntl(),
// and flock() too but on a `shared` spool (NFS, where flock is fcntl).
LockStatus lock_whole_file(int fd, bool shared, std::string& error);

}  // namespace popd::mailbox
