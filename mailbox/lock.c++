#include "mailbox/lock.h"

#include <fcntl.h>
#include <lockfile.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string_view>
#include <thread>
#include <utility>

#include "sys/file.h"
#include "params.h"

namespace popd::mailbox {
namespace {

using Clock = std::chrono::steady_clock;

// Calls `attempt` until it says locked or failed, or the wait is over:
// soon at first (the lock of a session that is just ending goes within
// milliseconds), then less and less often.
template <typename Attempt>
LockStatus retry(Attempt attempt) {
  auto deadline = Clock::now() + params::lock_wait;
  auto pause = params::lock_first_retry;
  for (;;) {
    LockStatus status = attempt();
    if (status != LockStatus::busy || Clock::now() >= deadline) return status;
    std::this_thread::sleep_for(pause);
    pause = std::min(2 * pause, params::lock_retry_interval);
  }
}

}  // namespace

DotLock::DotLock(DotLock&& other) noexcept
    : path_(std::exchange(other.path_, {})), owner_(std::exchange(other.owner_, false)),
      device_(other.device_), inode_(other.inode_), changed_(other.changed_) {}

DotLock& DotLock::operator=(DotLock&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::exchange(other.path_, {});
    owner_ = std::exchange(other.owner_, false);
    device_ = other.device_;
    inode_ = other.inode_;
    changed_ = other.changed_;
  }
  return *this;
}

DotLock::~DotLock() { release(); }

LockStatus DotLock::acquire(const std::string& mailbox, DotLock& lock, std::string& error, std::string& note,
                            bool shared) {
  std::string path = mailbox + ".lock";
  // With L_PID the lock holds our pid, and a lock whose pid is not alive
  // here is stale; without, liblockfile writes no pid and judges by age.
  int flags = shared ? 0 : L_PID;
  LockStatus status = retry([&] {
    // liblockfile removes a stale lock itself; look first, to log it.
    bool stale = ::access(path.c_str(), F_OK) == 0 && lockfile_check(path.c_str(), flags) != 0;
    // No retries inside liblockfile: its back-off starts at 5 seconds.
    switch (lockfile_create(path.c_str(), 0, flags)) {
      case L_SUCCESS:
        if (stale) note = "took over the stale lock " + path;
        return LockStatus::locked;
      case L_MAXTRYS: return LockStatus::busy;
      default:
        error = "cannot create " + path + ": " + sys::error_text(errno);
        return LockStatus::failed;
    }
  });
  if (status == LockStatus::busy) error = path + " is held by another process";
  if (status == LockStatus::locked) {
    lock.release();
    lock.path_ = std::move(path);
    lock.owner_ = true;
    lock.remember();
  }
  return status;
}

DotLock DotLock::held_elsewhere(const std::string& mailbox) {
  DotLock lock;
  lock.path_ = mailbox + ".lock";
  lock.remember();
  return lock;
}

void DotLock::remember() {
  struct stat st;
  if (::lstat(path_.c_str(), &st) == 0) device_ = st.st_dev, inode_ = st.st_ino, changed_ = st.st_ctim;
}

bool DotLock::still_ours() const {
  struct stat st;
  return ::lstat(path_.c_str(), &st) == 0 && st.st_dev == device_ && st.st_ino == inode_ &&
         st.st_ctim.tv_sec == changed_.tv_sec && st.st_ctim.tv_nsec == changed_.tv_nsec;
}

void DotLock::refresh() {
  if (!owner_ || path_.empty() || !still_ours()) return;
  lockfile_touch(path_.c_str());
  remember();
}

void DotLock::release() {
  // A lock taken over as stale meanwhile (a session stopped for 5 minutes
  // on a shared spool) is another's now: never removed here.
  if (owner_ && !path_.empty() && still_ours()) lockfile_remove(path_.c_str());
  path_.clear();
  owner_ = false;
}

bool on_shared_file_system(const std::string& mailbox) {
  constexpr unsigned long shared[] = {
      0x6969,      // NFS
      0x517B,      // SMB
      0xFF534D42,  // CIFS
      0xFE534D42,  // SMB2
      0x5346414F,  // AFS
      0x00C36400,  // Ceph
      0x65735546,  // FUSE (GlusterFS, sshfs, ...)
      0x01021997,  // 9P
      0x01161970,  // GFS2
      0x7461636F,  // OCFS2
      0x0BD00BD0,  // Lustre
      0x73757245,  // Coda
  };
  std::string directory = mailbox.substr(0, mailbox.rfind('/') + 1);
  struct statfs fs;
  // Not known (root squashed on an NFS home, say): taken for shared, where
  // the cost of being wrong is only that a stale lock waits out its age.
  if (::statfs(directory.empty() ? "." : directory.c_str(), &fs) != 0) return errno != ENOENT;
  auto type = static_cast<unsigned long>(fs.f_type) & 0xFFFFFFFF;
  return std::find(std::begin(shared), std::end(shared), type) != std::end(shared);
}

std::optional<gid_t> spool_directory_group(const std::string& mailbox) {
  if (!mailbox.starts_with('/')) return std::nullopt;
  std::string directory = mailbox.substr(0, mailbox.rfind('/'));
  struct stat st;
  // Each directory from the root down: a symbolic link, "." or "..", or
  // one that someone but root may change could lead elsewhere.
  for (std::size_t end = 0; end != std::string::npos;) {
    end = directory.find('/', end + 1);
    std::string prefix = end == std::string::npos ? directory : directory.substr(0, end);
    std::string_view name = std::string_view(prefix).substr(prefix.rfind('/') + 1);
    if (name == "." || name == "..") return std::nullopt;
    if (::lstat(prefix.empty() ? "/" : prefix.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != 0)
      return std::nullopt;
    bool last = end == std::string::npos;
    if (!last && (st.st_mode & 022) && !(st.st_mode & S_ISVTX)) return std::nullopt;
  }
  if (!(st.st_mode & S_IWGRP) || (st.st_mode & S_IWOTH) || st.st_gid == 0) return std::nullopt;
  return st.st_gid;
}

LockStatus lock_whole_file(int fd, bool shared, std::string& error) {
  LockStatus status = retry([&] {
    struct flock lock {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    if (::fcntl(fd, F_SETLK, &lock) != 0) {
      if (errno == EACCES || errno == EAGAIN || errno == EINTR) return LockStatus::busy;
      error = "cannot lock mailbox: " + sys::error_text(errno);
      return LockStatus::failed;
    }
    // On Linux flock() locks are apart from fcntl() ones, and some agents
    // (Dovecot's LDA with mbox_write_locks = flock, say) take only those.
    // On NFS flock() is an fcntl() lock already, of another owner than
    // ours: not taken twice there.
    if (shared || ::flock(fd, LOCK_EX | LOCK_NB) == 0) return LockStatus::locked;
    int cause = errno;
    lock.l_type = F_UNLCK;
    ::fcntl(fd, F_SETLK, &lock);
    if (cause == EWOULDBLOCK || cause == EINTR) return LockStatus::busy;
    error = "cannot lock mailbox: " + sys::error_text(cause);
    return LockStatus::failed;
  });
  if (status == LockStatus::busy) error = "mailbox is locked by another process";
  return status;
}

}  // namespace popd::mailbox
