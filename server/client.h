// The client's side of every process layout: who it is, TLS, and the loop
// that runs the protocol engine on its connection. Used by the pre-auth
// process (server/preauth.h), the session (server/session.h) and the
// one-process layout (server/serve.h).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "io/connection.h"
#include "options.h"
#include "protocol/engine.h"
#include "server/log.h"

namespace popd::server {

// The client's address for PAM, the log and the failure policy: the peer's,
// or with --proxy-protocol the one its header names (from a listed proxy
// only). nullopt: the connection must be closed; that is logged.
std::optional<std::string> client_address(const Options& options);

// Tells a plain client that the server is misconfigured (with implicit
// TLS nothing can be said before the handshake); the cause is logged.
void answer_configuration_error(const Options& options);

// The TLS context of the options (nullptr without TLS), loaded while popd
// may still be root; nullopt, logged and answered, if it does not load.
std::optional<std::unique_ptr<io::TlsContext>> load_tls(const Options& options);

// The client connection popd was started on (standard input and output),
// TLS already up with --tls-implicit; nullptr, logged, if that failed.
std::unique_ptr<io::Connection> open_client(const Options& options, const io::TlsContext* tls,
                                            const std::string& peer);
// What the engine offers on that connection before login.
protocol::Features features(const Options& options, const io::TlsContext* tls, const io::Connection& connection);
// What it offers after login, in the session process: TLS is the relay's.
protocol::Features session_features(const Options& options);

// Runs the engine on the connection until the session ends, is handed off,
// or the client goes; STLS needs `tls`.
Ending run_engine(protocol::Engine& engine, io::Connection& connection, const io::TlsContext* tls,
                  const std::string& peer);

}  // namespace popd::server
