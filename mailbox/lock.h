// Locking a spool the way Debian's MDAs expect (procmail, postfix local,
// liblockfile's dotlockfile, mutt): a dotlock "<mailbox>.lock" made with
// liblockfile (NFS-safe; where the spool directory is not writable by the
// user, by the monitor as the user with the directory's group, see
// spool_directory_group, or else through liblockfile's setgid helper), and
// an fcntl write lock on the mailbox itself.
#pragma once

#include <sys/types.h>

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

  // Waits up to params::lock_wait for "<mailbox>.lock". A stale lock (its
  // process is gone, or it is older than 5 minutes without a pid) is taken
  // over, and `note` says so.
  static LockStatus acquire(const std::string& mailbox, DotLock& lock, std::string& error,
                            std::string& note);
  // The dotlock of `mailbox` that another process (the monitor) took and
  // will remove: this one keeps it fresh and never removes it.
  static DotLock held_elsewhere(const std::string& mailbox);
  // Keeps the lock fresh: others take a dotlock older than 5 minutes as stale.
  void refresh();
  void release();
  bool held() const { return !path_.empty(); }
  // Forgets the lock without removing it: a forked child's copy.
  void abandon() { path_.clear(); }

 private:
  std::string path_;
  bool owner_ = false;
};

// The group that may create files in the directory of `mailbox` when the
// user cannot, so that a session could take the dotlock only through
// liblockfile's setgid helper: a directory that root owns, that its group
// (not root's) may write and others may not, below directories only root
// can change (or sticky ones). Nothing for any other place.
std::optional<gid_t> spool_directory_group(const std::string& mailbox);

// Waits up to params::lock_wait for a write lock on all of fd.
LockStatus lock_whole_file(int fd, std::string& error);

}  // namespace popd::mailbox
