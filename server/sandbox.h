// What the pre-auth process may still do once it has dropped privileges.
//
// It parses everything a client sends before login and runs TLS: the part
// of popd an attacker reaches first. Besides its chroot and its account it
// gets limits (no new process, few descriptors, bounded memory and memfds,
// no core) and a seccomp filter that allows only the system calls it
// makes: reading, writing and polling its descriptors, passing descriptors
// on sockets, memory (never executable), the ring it shares with the
// session, descriptor flags (not F_SETOWN, F_SETSIG or O_ASYNC, which
// would let it signal other processes of its account), time, random
// bytes, its syslog socket, and exit. Opening a file or a socket fails (as
// it would in the empty chroot, but for abstract Unix sockets, which the
// chroot does not hide); anything else kills it.
#pragma once

#include <string>

namespace popd::server {

// Applies both to the calling process; false (and `error`) if it could not.
// A no-op in a build with AddressSanitizer, whose runtime needs threads,
// huge mappings and ptrace.
bool confine_pre_auth(std::string& error);

}  // namespace popd::server
