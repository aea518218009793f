#include "server/descriptors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <vector>

#include "server/log.h"

namespace popd::server {
namespace {

// `a` is a socket, and the same one as `b`.
bool same_socket(int a, int b) {
  struct stat sa, sb;
  return ::fstat(a, &sa) == 0 && S_ISSOCK(sa.st_mode) && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

// Closes [first, last]; close_range(2) where the kernel has it (5.9).
void close_range_of(unsigned first, unsigned last) {
  if (first > last) return;
  if (::close_range(first, last, 0) == 0) return;
  for (long fd = first, top = std::min<long>(last, ::sysconf(_SC_OPEN_MAX)); fd <= top; ++fd) ::close(fd);
}

}  // namespace

void null_on(int fd) {
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) {
    ::close(fd);  // no /dev/null: at least the socket is not kept here
    return;
  }
  if (null != fd) {
    ::dup2(null, fd);  // without O_CLOEXEC: a helper popd runs gets it too
    ::close(null);
  } else {
    ::fcntl(fd, F_SETFD, 0);
  }
}

void settle_standard_descriptors() {
  for (int fd = 0; fd <= 2; ++fd)
    if (::fcntl(fd, F_GETFD) < 0) null_on(fd);
  // Standard error is the client's socket under inetd: anything written
  // there would reach it in clear. Elsewhere (a terminal, a pipe, the
  // journal's socket) it stays.
  if (same_socket(2, 0) || same_socket(2, 1)) null_on(2);
  close_range_of(3, UINT_MAX);
}

void close_all_but(std::initializer_list<int> keep) {
  ::closelog();
  std::vector<int> kept(keep);
  std::sort(kept.begin(), kept.end());
  unsigned next = 3;
  for (int fd : kept) {
    if (fd < static_cast<int>(next)) continue;
    close_range_of(next, fd - 1);
    next = fd + 1;
  }
  close_range_of(next, UINT_MAX);
  open_log();
}

}  // namespace popd::server
