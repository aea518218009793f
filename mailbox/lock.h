// Locking a spool the way Debian's MDAs expect (procmail, postfix local,
// liblockfile's dotlockfile, mutt): a dotlock "<mailbox>.lock" made with
// liblockfile (NFS-safe, through its setgid helper where the spool directory
// is not writable), and an fcntl write lock on the mailbox itself.
#pragma once

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
  // Keeps the lock fresh: others take a dotlock older than 5 minutes as stale.
  void refresh();
  void release();

 private:
  std::string path_;
};

// Waits up to params::lock_wait for a write lock on all of fd.
LockStatus lock_whole_file(int fd, std::string& error);

}  // namespace popd::mailbox
