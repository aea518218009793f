// The user's session: the TRANSACTION state, run as the user, in either
// process layout (DESIGN): the session process privilege separation forks,
// or the one process of a popd started as the user.
#pragma once

#include <string>

#include "io/connection.h"
#include "options.h"
#include "protocol/engine.h"
#include "sys/fd.h"

namespace popd::server {

class SystemLogin;

// The rest of a session whose login runs through `login`: runs it, logs its
// end, releases the mailbox, and closes the connection so that the last
// reply arrives. `tls_relayed`: TLS is up, in the process that relays.
void serve_user(protocol::Engine& engine, io::Connection& connection, SystemLogin& login,
                const io::TlsContext* tls, const std::string& peer, bool tls_relayed);

// The session process of privilege separation, which start() of `login`
// has just forked: becomes the user, receives the connection from the
// pre-auth process on `socket` (server/handover.h), opens the mailbox and
// serves the session. Returns the process's exit status.
int run_session_process(SystemLogin& login, sys::UniqueFd socket, const Options& options, const std::string& peer);

}  // namespace popd::server
