// Privilege separation, when popd starts as root (see DESIGN):
//   monitor (root)        asks PAM, starts the session; parses nothing the
//                         client sent beyond a user name and a password
//   pre-auth (unprivileged, chrooted to an empty directory)
//                         greeting, AUTHORIZATION state, TLS, SASL; after
//                         login it relays bytes between client and session
//   session (the user)    TRANSACTION state on a socket to the pre-auth
#pragma once

#include "options.h"

namespace popd::server {

// The TLS key is loaded by the pre-auth process alone, which needs it for
// the handshake: neither the monitor nor the session it forks ever holds it.
int run_separated(const Options& options);

}  // namespace popd::server
