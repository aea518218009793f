// The pre-auth process's seccomp policy (server/sandbox.h), written with
// libseccomp. Not linked into popd: tools/seccomp-filter.c++ compiles it
// to a BPF program when popd is built, and the pre-auth process loads that
// program as it is, which costs microseconds where building it costs a
// millisecond of every connection.
#include "server/seccomp_policy.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <initializer_list>

namespace popd::server {

scmp_filter_ctx pre_auth_policy() {
  scmp_filter_ctx filter = seccomp_init(SCMP_ACT_KILL_PROCESS);
  if (!filter) return nullptr;
  auto allow = [&](int call) { return seccomp_rule_add(filter, SCMP_ACT_ALLOW, call, 0) == 0; };
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
      seccomp_release(filter);
      return nullptr;
    }
  auto rule = [&](std::uint32_t action, int call, scmp_arg_cmp arg) {
    return seccomp_rule_add(filter, action, call, 1, arg) == 0;
  };
  bool ok =
      // A library that looks for a file (syslog's time zone) or a new
      // socket (syslog reconnecting, on its connected one) finds none, as
      // in the empty chroot, rather than dying for it. No socket at all:
      // the chroot does not hide abstract Unix sockets.
      seccomp_rule_add(filter, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(openat), 0) == 0 &&
      seccomp_rule_add(filter, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(open), 0) == 0 &&
      seccomp_rule_add(filter, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 0) == 0 &&
      seccomp_rule_add(filter, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(connect), 0) == 0 &&
      // Never executable memory.
      rule(SCMP_ACT_ALLOW, SCMP_SYS(mmap), SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) &&
      // The doorbell pair.
      rule(SCMP_ACT_ALLOW, SCMP_SYS(socketpair), SCMP_A0(SCMP_CMP_EQ, AF_UNIX)) &&
      // Descriptor flags, non-blocking (never O_ASYNC), the ring's seals;
      // not F_SETOWN and F_SETSIG, which would let it signal any process
      // of its account.
      rule(SCMP_ACT_ALLOW, SCMP_SYS(fcntl), SCMP_A1(SCMP_CMP_EQ, F_GETFL)) &&
      seccomp_rule_add(filter, SCMP_ACT_ALLOW, SCMP_SYS(fcntl), 2, SCMP_A1(SCMP_CMP_EQ, F_SETFL),
                       SCMP_A2(SCMP_CMP_MASKED_EQ, O_ASYNC, 0)) == 0 &&
      rule(SCMP_ACT_ALLOW, SCMP_SYS(fcntl), SCMP_A1(SCMP_CMP_EQ, F_GETFD)) &&
      rule(SCMP_ACT_ALLOW, SCMP_SYS(fcntl), SCMP_A1(SCMP_CMP_EQ, F_SETFD)) &&
      rule(SCMP_ACT_ALLOW, SCMP_SYS(fcntl), SCMP_A1(SCMP_CMP_EQ, F_ADD_SEALS)) &&
      rule(SCMP_ACT_ALLOW, SCMP_SYS(fcntl), SCMP_A1(SCMP_CMP_EQ, F_GET_SEALS));
  if (!ok) {
    seccomp_release(filter);
    return nullptr;
  }
  return filter;
}

}  // namespace popd::server
