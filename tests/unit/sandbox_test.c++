// The pre-auth process's confinement, tried in forked children.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "server/sandbox.h"

namespace {

// How a child that confined itself and then ran `then` ended: its exit
// status, or minus the signal that killed it.
template <typename Then>
int confined(Then then) {
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::string error;
    if (!popd::server::confine_pre_auth(error)) ::_exit(100);
    ::_exit(then());
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  return WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("the pre-auth process may do what it does, and dies of anything else") {
#if defined(__SANITIZE_ADDRESS__)
  MESSAGE("not confined under AddressSanitizer (server/sandbox.h)");
#else
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
  // What it uses: its sockets, descriptors passed on them, memory, a memfd.
  CHECK(confined([&] {
          char byte = 'x';
          if (::write(pair[0], &byte, 1) != 1 || ::read(pair[1], &byte, 1) != 1) return 1;
          int more[2];
          if (::socketpair(AF_UNIX, SOCK_STREAM, 0, more) != 0) return 2;
          void* memory = ::mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
          if (memory == MAP_FAILED) return 3;
          int ring = ::memfd_create("ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
          if (ring < 0 || ::ftruncate(ring, 1 << 20) != 0) return 4;
          // A file cannot be opened (the chroot is empty anyway).
          if (::open("/etc/passwd", O_RDONLY) >= 0 || errno != EACCES) return 5;
          return 0;
        }) == 0);
  // What it must never do. No socket of any kind (an abstract Unix socket
  // is reachable from the chroot): it fails, as syslog's reconnection may try.
  CHECK(confined([] { return ::socket(AF_INET, SOCK_STREAM, 0) < 0 && errno == EACCES ? 0 : 1; }) == 0);
  CHECK(confined([] { return ::socket(AF_UNIX, SOCK_DGRAM, 0) < 0 && errno == EACCES ? 0 : 1; }) == 0);
  // Signals by way of a descriptor: F_SETOWN, F_SETSIG, O_ASYNC.
  CHECK(confined([&] { return ::fcntl(pair[0], F_SETOWN, 1); }) == -SIGSYS);
  CHECK(confined([&] { return ::fcntl(pair[0], F_SETSIG, SIGKILL); }) == -SIGSYS);
  CHECK(confined([&] { return ::fcntl(pair[0], F_SETFL, O_ASYNC | O_NONBLOCK); }) == -SIGSYS);
  // Memory in memfds (not counted in the address space) is bounded too.
  CHECK(confined([] {
          int fd = ::memfd_create("big", MFD_CLOEXEC);
          return fd >= 0 && ::ftruncate(fd, 64 << 20) == 0 ? 0 : 1;
        }) != 0);
  CHECK(confined([] { return ::fork() >= 0 ? 0 : 1; }) == -SIGSYS);
  CHECK(confined([] { return ::setuid(0) == 0 ? 0 : 1; }) == -SIGSYS);
  CHECK(confined([] { return ::unlink("/tmp/popd-never") == 0 ? 0 : 1; }) == -SIGSYS);
  CHECK(confined([] {
          return ::mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED;
        }) == -SIGSYS);
  ::close(pair[0]);
  ::close(pair[1]);
#endif
}
