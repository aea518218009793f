// The monitor of privilege separation (DESIGN), when popd starts as root:
//   monitor (root)        reads the PROXY header, answers login requests
//                         with PAM, makes the dotlock; parses nothing the
//                         client sent beyond a user name and a password
//   pre-auth (unprivileged, chrooted to an empty directory; preauth.h)
//                         greeting, AUTHORIZATION state, TLS, SASL; after
//                         login it relays bytes between client and session
//   session (the user; session.h)
//                         TRANSACTION state on a socket to the pre-auth
//                         process, or on the client itself without TLS
// The messages between them are in handover.h.
#pragma once

#include "options.h"

namespace popd::server {

// Forks the pre-auth process and serves its login requests; in the process
// that becomes the session, returns when the session ends. The TLS key is
// loaded by the pre-auth process alone, which needs it for the handshake:
// neither the monitor nor the session it forks ever holds it.
int run_monitor(const Options& options);

}  // namespace popd::server
