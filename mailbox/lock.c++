#include "mailbox/lock.h"

#include <fcntl.h>
#include <lockfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string_view>
#include <thread>
#include <utility>

#include "io/file.h"
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
    : path_(std::exchange(other.path_, {})), owner_(std::exchange(other.owner_, false)) {}

DotLock& DotLock::operator=(DotLock&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::exchange(other.path_, {});
    owner_ = std::exchange(other.owner_, false);
  }
  return *this;
}

DotLock::~DotLock() { release(); }

LockStatus DotLock::acquire(const std::string& mailbox, DotLock& lock, std::string& error,
                            std::string& note) {
  std::string path = mailbox + ".lock";
  LockStatus status = retry([&] {
    // liblockfile removes a stale lock itself; look first, to log it.
    bool stale = ::access(path.c_str(), F_OK) == 0 && lockfile_check(path.c_str(), L_PID) != 0;
    // No retries inside liblockfile: its back-off starts at 5 seconds.
    switch (lockfile_create(path.c_str(), 0, L_PID)) {
      case L_SUCCESS:
        if (stale) note = "took over the stale lock " + path;
        return LockStatus::locked;
      case L_MAXTRYS: return LockStatus::busy;
      default:
        error = "cannot create " + path + ": " + io::error_text(errno);
        return LockStatus::failed;
    }
  });
  if (status == LockStatus::busy) error = path + " is held by another process";
  if (status == LockStatus::locked) {
    lock.release();
    lock.path_ = std::move(path);
    lock.owner_ = true;
  }
  return status;
}

DotLock DotLock::held_elsewhere(const std::string& mailbox) {
  DotLock lock;
  lock.path_ = mailbox + ".lock";
  return lock;
}

void DotLock::refresh() {
  if (!path_.empty()) lockfile_touch(path_.c_str());
}

void DotLock::release() {
  if (owner_ && !path_.empty()) lockfile_remove(path_.c_str());
  path_.clear();
  owner_ = false;
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

LockStatus lock_whole_file(int fd, std::string& error) {
  LockStatus status = retry([&] {
    struct flock lock {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    if (::fcntl(fd, F_SETLK, &lock) == 0) return LockStatus::locked;
    if (errno == EACCES || errno == EAGAIN || errno == EINTR) return LockStatus::busy;
    error = "cannot lock mailbox: " + io::error_text(errno);
    return LockStatus::failed;
  });
  if (status == LockStatus::busy) error = "mailbox is locked by another process";
  return status;
}

}  // namespace popd::mailbox
