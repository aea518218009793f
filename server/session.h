// One POP3 session, from greeting to close, in either process layout:
// started as a user (one process), or as root (privilege separation, see
// DESIGN and server/privsep.h). Both run the same steps below.
#pragma once

#include <memory>
#include <string>

#include "io/connection.h"
#include "options.h"
#include "protocol/engine.h"

namespace popd::server {

class SystemLogin;

int serve(const Options& options);

// The client connection popd was started on (standard input and output),
// TLS already up with --tls-implicit; nullptr, logged, if that failed.
std::unique_ptr<io::Connection> open_client(const Options& options, const io::TlsContext* tls,
                                            const std::string& peer);
// What the engine offers on that connection before login.
protocol::Features features(const Options& options, const io::TlsContext* tls, const io::Connection& connection);

// Runs the engine on the connection until the session ends, is handed off,
// or the client goes; STLS needs `tls`. Returns how it ended, for the log.
const char* run_session(protocol::Engine& engine, io::Connection& connection, const io::TlsContext* tls,
                        const std::string& peer);

// The rest of a session whose login runs through `login`: runs it, logs its
// end, releases the mailbox, and closes the connection so that the last
// reply arrives.
void serve_user(protocol::Engine& engine, io::Connection& connection, SystemLogin& login,
                const io::TlsContext* tls, const std::string& peer);

}  // namespace popd::server
