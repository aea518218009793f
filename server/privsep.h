// Privilege separation, when popd starts as root (see DESIGN):
//   monitor (root)        asks PAM, starts the session; parses nothing the
//                         client sent beyond a user name and a password
//   pre-auth (unprivileged, chrooted to an empty directory)
//                         greeting, AUTHORIZATION state, TLS, SASL; after
//                         login it relays bytes between client and session
//   session (the user)    TRANSACTION state on a socket to the pre-auth
#pragma once

#include "io/tls.h"
#include "options.h"

namespace popd::server {

int run_separated(const Options& options, const io::TlsContext* tls);

}  // namespace popd::server
