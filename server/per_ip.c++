#include "server/per_ip.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "sys/file.h"

namespace popd::server {

ConnectionSlot::~ConnectionSlot() {
  // Removed while still locked: one who opened it meanwhile finds, once
  // it has the lock, that the name is another file's or none, and retries.
  if (fd_) ::unlink(path_.c_str());
}

std::optional<ConnectionSlot> take_connection_slot(const std::string& directory, const std::string& address,
                                                   int limit, std::string& error) {
  if (::mkdir(directory.c_str(), 0700) != 0 && errno != EEXIST) {
    error = directory + ": " + sys::error_text(errno);
    return std::nullopt;
  }
  struct stat st;
  if (::lstat(directory.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 022)) {
    error = directory + " must be a directory of popd's own that only it can write";
    return std::nullopt;
  }
  // The address is the file name: an IPv4 or IPv6 address as the PROXY
  // parser and getpeername print it, no '/'; "local" without a network.
  std::string base = directory + "/" + (address.empty() ? "local" : address) + ".";
  for (int slot = 0; slot < limit; ++slot) {
    std::string path = base + std::to_string(slot);
    for (int attempt = 0; attempt < 3; ++attempt) {
      sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!fd) {
        error = path + ": " + sys::error_text(errno);
        return std::nullopt;
      }
      if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) break;  // taken: the next slot
      struct stat held, named;
      if (::fstat(fd.get(), &held) == 0 && ::stat(path.c_str(), &named) == 0 && held.st_ino == named.st_ino &&
          held.st_dev == named.st_dev)
        return ConnectionSlot(std::move(fd), path);
      // Its holder removed it as we opened it: try the name again.
    }
  }
  return std::nullopt;
}

}  // namespace popd::server
