// What the pre-auth process may still do once it has dropped privileges.
//
// It parses everything a client sends before login and runs TLS: the part
// of popd an attacker reaches first. Besides its chroot and its account it
// gets limits (no new process, few descriptors, bounded memory, no core)
// and a seccomp filter that allows only the system calls it makes: reading,
// writing and polling its descriptors, passing descriptors on sockets,
// memory (never executable), the ring it shares with the session, time,
// random bytes, syslog, and exit. Opening a file fails (as it would in the
// empty chroot); anything else kills it.
#pragma once

#include <string>

namespace popd::server {

// Applies both to the calling process; false (and `error`) if it could not.
// A no-op in a build with AddressSanitizer, whose runtime needs threads,
// huge mappings and ptrace.
bool confine_pre_auth(std::string& error);

}  // namespace popd::server
