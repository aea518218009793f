// One POP3 session on standard input and output, from greeting to close.
#pragma once

#include <string>

#include "io/connection.h"
#include "options.h"
#include "protocol/engine.h"

namespace popd::server {

int serve(const Options& options);

// Runs the engine on the connection until the session ends, is handed off,
// or the client goes; STLS needs `tls`. Returns how it ended, for the log.
const char* run_session(protocol::Engine& engine, io::Connection& connection, const io::TlsContext* tls,
                        const std::string& peer);

void log_session_end(const std::string& user, const std::string& peer, const protocol::SessionStats& stats,
                     const char* how);

}  // namespace popd::server
