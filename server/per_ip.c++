#include "server/per_ip.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "sys/file.h"

namespace popd::server {

std::string counted_source(const std::string& address) {
  in6_addr ip6;
  if (::inet_pton(AF_INET6, address.c_str(), &ip6) != 1) return address;
  std::fill(ip6.s6_addr + 8, ip6.s6_addr + 16, 0);
  char text[INET6_ADDRSTRLEN];
  return std::string(::inet_ntop(AF_INET6, &ip6, text, sizeof text)) + "-64";
}

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
  // The source is the file name: an IPv4 address or an IPv6 /64 as
  // inet_ntop prints it (the PROXY parser's too), no '/'; "local" without
  // a network.
  std::string base = directory + "/" + (address.empty() ? "local" : counted_source(address)) + ".";
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
