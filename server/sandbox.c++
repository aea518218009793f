#include "server/sandbox.h"

#include <fcntl.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <memory>

#include "io/file.h"
#include "io/ring.h"
#include "params.h"

namespace popd::server {
namespace {

[[maybe_unused]] bool limit(int resource, rlim_t value) {
  rlimit both{value, value};
  return ::setrlimit(resource, &both) == 0;
}

struct ReleaseFilter {
  void operator()(scmp_filter_ctx filter) const { seccomp_release(filter); }
};

[[maybe_unused]] bool load_filter(std::string& error) {
  std::unique_ptr<void, ReleaseFilter> filter(seccomp_init(SCMP_ACT_KILL_PROCESS));
  if (!filter) {
    error = "seccomp_init failed";
    return false;
  }
  auto allow = [&](int call) { return seccomp_rule_add(filter.get(), SCMP_ACT_ALLOW, call, 0) == 0; };
  // The connection, the channel to the monitor, the hand-over and the relay.
  for (int call : {SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(recvfrom),
                   SCMP_SYS(sendto), SCMP_SYS(recvmsg), SCMP_SYS(sendmsg), SCMP_SYS(poll), SCMP_SYS(ppoll),
                   SCMP_SYS(shutdown), SCMP_SYS(close), SCMP_SYS(fstat), SCMP_SYS(newfstatat),
                   // The reply ring: a sealed memfd (io/ring.h).
                   SCMP_SYS(memfd_create), SCMP_SYS(ftruncate),
                   // Memory, time, randomness (OpenSSL reseeds), signals.
                   SCMP_SYS(brk), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(madvise), SCMP_SYS(futex),
                   SCMP_SYS(clock_gettime), SCMP_SYS(gettimeofday), SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep),
                   SCMP_SYS(getrandom), SCMP_SYS(rt_sigreturn), SCMP_SYS(rt_sigprocmask), SCMP_SYS(restart_syscall),
                   SCMP_SYS(getpid), SCMP_SYS(getuid), SCMP_SYS(geteuid), SCMP_SYS(getgid), SCMP_SYS(getegid),
                   SCMP_SYS(exit), SCMP_SYS(exit_group)})
    if (!allow(call)) {
      error = "seccomp_rule_add failed";
      return false;
    }
  // Never executable memory; sockets only of the local kind (the doorbell
  // pair, syslog's reconnection, which the chroot makes fail anyway).
  auto rule = [&](std::uint32_t action, int call, scmp_arg_cmp arg) {
    return seccomp_rule_add(filter.get(), action, call, 1, arg) == 0;
  };
  bool ok =
      // A library that looks for a file (syslog's time zone) or a new
      // socket (syslog reconnecting, on its connected one) finds none, as
      // in the empty chroot, rather than dying for it. No socket at all:
      // the chroot does not hide abstract Unix sockets.
      seccomp_rule_add(filter.get(), SCMP_ACT_ERRNO(EACCES), SCMP_SYS(openat), 0) == 0 &&
      seccomp_rule_add(filter.get(), SCMP_ACT_ERRNO(EACCES), SCMP_SYS(open), 0) == 0 &&
      seccomp_rule_add(filter.get(), SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 0) == 0 &&
      seccomp_rule_add(filter.get(), SCMP_ACT_ERRNO(EACCES), SCMP_SYS(connect), 0) == 0 &&
      // Never executable memory.
      rule(SCMP_ACT_ALLOW, SCMP_SYS(mmap), SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) &&
      // The doorbell pair.
      rule(SCMP_ACT_ALLOW, SCMP_SYS(socketpair), SCMP_A0(SCMP_CMP_EQ, AF_UNIX)) &&
      // Descriptor flags, non-blocking (never O_ASYNC), the ring's seals;
      // not F_SETOWN and F_SETSIG, which would let it signal any process
      // of its account.
      rule(SCMP_ACT_ALLOW, SCMP_SYS(fcntl), SCMP_A1(SCMP_CMP_EQ, F_GETFL)) &&
      seccomp_rule_add(filter.get(), SCMP_ACT_ALLOW, SCMP_SYS(fcntl), 2, SCMP_A1(SCMP_CMP_EQ, F_SETFL),
                       SCMP_A2(SCMP_CMP_MASKED_EQ, O_ASYNC, 0)) == 0 &&
      rule(SCMP_ACT_ALLOW, SCMP_SYS(fcntl), SCMP_A1(SCMP_CMP_EQ, F_GETFD)) &&
      rule(SCMP_ACT_ALLOW, SCMP_SYS(fcntl), SCMP_A1(SCMP_CMP_EQ, F_SETFD)) &&
      rule(SCMP_ACT_ALLOW, SCMP_SYS(fcntl), SCMP_A1(SCMP_CMP_EQ, F_ADD_SEALS)) &&
      rule(SCMP_ACT_ALLOW, SCMP_SYS(fcntl), SCMP_A1(SCMP_CMP_EQ, F_GET_SEALS));
  int loaded = ok ? seccomp_load(filter.get()) : -1;
  if (loaded != 0) {
    error = "cannot load the seccomp filter: " + io::error_text(loaded < 0 ? -loaded : EINVAL);
    return false;
  }
  return true;
}

}  // namespace

bool confine_pre_auth(std::string& error) {
#if defined(__SANITIZE_ADDRESS__)
  (void)error;
  return true;
#else
  // RLIMIT_FSIZE bounds what memfds hold (RLIMIT_AS does not count it):
  // the ring's is the only one it needs.
  if (!limit(RLIMIT_NPROC, 0) || !limit(RLIMIT_NOFILE, params::pre_auth_descriptors) ||
      !limit(RLIMIT_AS, params::pre_auth_memory) || !limit(RLIMIT_FSIZE, io::Ring::file_size()) ||
      !limit(RLIMIT_CORE, 0)) {
    error = "cannot set the pre-login process's limits: " + io::error_text(errno);
    return false;
  }
  return load_filter(error);
#endif
}

}  // namespace popd::server
