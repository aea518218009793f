// The pre-authentication process of privilege separation (DESIGN): runs
// as an unprivileged account, chrooted to an empty directory and confined
// (server/sandbox.h). It holds the client's connection: the greeting, the
// AUTHORIZATION state, TLS and SASL. A login goes to the monitor as a
// request (server/handover.h); on success it hands the connection to the
// session, and with TLS relays bytes between client and session until the
// end.
#pragma once

#include <sys/types.h>

#include <string>

#include "options.h"

namespace popd::server {

// The account the pre-auth process runs as.
struct Unprivileged {
  uid_t uid;
  gid_t gid;
};

// Runs as root until the key is loaded (only this process ever holds it),
// then drops to `account` in options.privsep_dir. `channel`: to the
// monitor. Returns the process's exit status.
int run_pre_auth(int channel, const Options& options, const Unprivileged& account, const std::string& peer);

}  // namespace popd::server
