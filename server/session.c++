#include "server/session.h"

#include <signal.h>
#include <syslog.h>
#include <unistd.h>

#include <memory>

#include "auth/privileges.h"
#include "io/tls.h"
#include "server/login.h"
#include "server/privsep.h"

namespace popd::server {

namespace {
const char* or_local(const std::string& peer) { return peer.empty() ? "local" : peer.c_str(); }
}  // namespace

void log_session_end(const std::string& user, const std::string& peer, const protocol::SessionStats& stats,
                     const char* how) {
  syslog(LOG_INFO, "session end: user=%s rhost=%s retrieved=%llu messages/%llu bytes deleted=%llu: %s",
         user.c_str(), or_local(peer), static_cast<unsigned long long>(stats.retrieved_messages),
         static_cast<unsigned long long>(stats.retrieved_bytes),
         static_cast<unsigned long long>(stats.deleted_messages), how);
}

const char* run_session(protocol::Engine& engine, io::Connection& connection, const io::TlsContext* tls,
                        const std::string& peer) {
  std::string data, error;
  while (!engine.closed()) {
    // Answer every complete command, then flush once: pipelined commands
    // share writes, and nothing is held back while the client waits.
    while (engine.command_waiting() && !connection.failed()) engine.step();
    if (engine.closed()) break;
    if (engine.take_tls_request()) {
      // STLS: what the client sent after the command was sent in plaintext
      // and is dropped, never run as if it had come through TLS.
      engine.discard_pending_input();
      if (!tls || !connection.flush() || !connection.start_tls(*tls, error)) {
        syslog(LOG_NOTICE, "STLS: rhost=%s: %s", or_local(peer), error.c_str());
        return "TLS handshake failed";
      }
      engine.tls_started();
      continue;
    }
    if (!connection.flush()) return "connection lost, nothing committed";
    switch (connection.read(data)) {
      case io::Connection::ReadResult::data: engine.receive(data); break;
      case io::Connection::ReadResult::timeout:
        if (io::Connection::session_expired()) {
          engine.abort("Session time limit reached, closing connection");
          connection.flush();
          return "session time limit, nothing committed";
        }
        engine.abort("Idle timeout, closing connection");
        connection.flush();
        return "idle timeout, nothing committed";
      case io::Connection::ReadResult::stopped: return "stopped by a signal, nothing committed";
      case io::Connection::ReadResult::end: return "connection closed without QUIT, nothing committed";
    }
  }
  connection.flush();
  return "quit";
}

int serve(const Options& options) {
  ::signal(SIGPIPE, SIG_IGN);  // a gone client shows as EPIPE
  io::Connection::stop_on_termination_signals();
  io::Connection::limit_session(std::chrono::seconds(options.max_session_seconds));
  ::openlog("popd", LOG_PID | LOG_NDELAY, LOG_MAIL);

  // The key is read now, while popd may still be root.
  std::unique_ptr<io::TlsContext> tls;
  std::string error;
  if (options.tls_configured() && !(tls = io::TlsContext::load(options.tls, error))) {
    syslog(LOG_ERR, "TLS configuration: %s", error.c_str());
    if (!options.tls_implicit) {
      io::Connection connection(STDIN_FILENO, STDOUT_FILENO, std::chrono::seconds(options.timeout_seconds));
      connection.write("-ERR [SYS/TEMP] Server configuration error\r\n");
      connection.flush();
    }
    return 1;
  }
  if (auth::running_as_root()) return run_separated(options, tls.get());

  // Not root: nothing to separate; one process serves the invoking user.
  io::Connection connection(STDIN_FILENO, STDOUT_FILENO, std::chrono::seconds(options.timeout_seconds));
  std::string peer = connection.peer_address();
  if (options.tls_implicit && !connection.start_tls(*tls, error)) {
    syslog(LOG_NOTICE, "TLS: rhost=%s: %s", or_local(peer), error.c_str());
    return 1;
  }
  SystemLogin login(options, peer);
  protocol::Engine engine(login, connection,
                          {.stls = tls && !options.tls_implicit,
                           .tls_active = connection.tls_active(),
                           .require_tls = options.require_tls});
  connection.on_tick([&login] { login.tick(); });
  engine.greet();
  const char* how = run_session(engine, connection, tls.get(), peer);
  if (login.logged_in()) log_session_end(login.user(), peer, engine.stats(), how);
  return 0;
}

}  // namespace popd::server
