// One POP3 session, from greeting to close, in either process layout:
// started as a user (one process), or as root (privilege separation, see
// DESIGN and server/privsep.h). Both run the same steps below.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "io/connection.h"
#include "options.h"
#include "protocol/engine.h"

namespace popd::server {

class SystemLogin;

int serve(const Options& options);

// popd --list-uids MAILBOX: each message's number and unique-id, as UIDL
// would list them, on standard output.
int list_uids(const Options& options);

// The client's address for PAM, the log and the failure policy: the peer's,
// or with --proxy-protocol the one its header names (from a listed proxy
// only). nullopt: the connection must be closed; that is logged.
std::optional<std::string> client_address(const Options& options);

// The TLS context of the options (nullptr without TLS), loaded while popd
// may still be root; nullopt, logged and answered, if it does not load.
std::optional<std::unique_ptr<io::TlsContext>> load_tls(const Options& options);

// The client connection popd was started on (standard input and output),
// TLS already up with --tls-implicit; nullptr, logged, if that failed.
std::unique_ptr<io::Connection> open_client(const Options& options, const io::TlsContext* tls,
                                            const std::string& peer);
// What the engine offers on that connection before login.
protocol::Features features(const Options& options, const io::TlsContext* tls, const io::Connection& connection);

// How a session ended, for the result= of its log line (popd.8, LOGGING).
enum class Ending { quit, timeout, time_limit, closed, signal, tls_failed, lost };

// Runs the engine on the connection until the session ends, is handed off,
// or the client goes; STLS needs `tls`.
Ending run_session(protocol::Engine& engine, io::Connection& connection, const io::TlsContext* tls,
                   const std::string& peer);

// The one line that ends every session, in a stable key=value form.
void log_session_end(const std::string& user, const std::string& peer, bool tls,
                     const protocol::SessionStats& stats, Ending ending);

// The rest of a session whose login runs through `login`: runs it, logs its
// end, releases the mailbox, and closes the connection so that the last
// reply arrives. `tls_relayed`: TLS is up, in the process that relays.
void serve_user(protocol::Engine& engine, io::Connection& connection, SystemLogin& login,
                const io::TlsContext* tls, const std::string& peer, bool tls_relayed);

}  // namespace popd::server
