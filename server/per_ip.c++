#include "server/per_ip.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "sys/file.h"

namespace popd::server {

SlotTaken take_connection_slot(const std::string& directory, const std::string& address, int limit) {
  SlotTaken taken;
  if (::mkdir(directory.c_str(), 0700) != 0 && errno != EEXIST) {
    taken.error = directory + ": " + sys::error_text(errno);
    return taken;
  }
  struct stat st;
  if (::lstat(directory.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 022)) {
    taken.error = directory + " must be a directory of popd's own that only it can write";
    return taken;
  }
  // The address is the file name: an IPv4 or IPv6 address as inet_ntop
  // prints it (the PROXY parser's too), no '/'; "local" without a network.
  std::string base = directory + "/" + (address.empty() ? "local" : address) + ".";
  for (int slot = 0; slot < limit; ++slot) {
    std::string path = base + std::to_string(slot);
    sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600));
    if (!fd) {
      taken.error = path + ": " + sys::error_text(errno);
      return taken;
    }
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) {
      taken.slot = std::move(fd);
      return taken;
    }
    if (errno != EWOULDBLOCK) {
      taken.error = path + ": " + sys::error_text(errno);
      return taken;
    }
  }
  taken.full = true;
  return taken;
}

}  // namespace popd::server
