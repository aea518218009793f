#include "server/session.h"

#include <signal.h>
#include <syslog.h>
#include <unistd.h>

#include "auth/privileges.h"
#include "io/file.h"
#include "io/tls.h"
#include "server/login.h"
#include "server/privsep.h"

namespace popd::server {

namespace {

const char* or_local(const std::string& peer) { return peer.empty() ? "local" : peer.c_str(); }

void log_session_end(const std::string& user, const std::string& peer, const protocol::SessionStats& stats,
                     const char* how) {
  syslog(LOG_INFO, "session end: user=%s rhost=%s retrieved=%llu messages/%llu bytes deleted=%llu: %s",
         user.c_str(), or_local(peer), static_cast<unsigned long long>(stats.retrieved_messages),
         static_cast<unsigned long long>(stats.retrieved_bytes),
         static_cast<unsigned long long>(stats.deleted_messages), how);
}

}  // namespace

std::unique_ptr<io::Connection> open_client(const Options& options, const io::TlsContext* tls,
                                            const std::string& peer) {
  auto connection =
      std::make_unique<io::Connection>(STDIN_FILENO, STDOUT_FILENO, std::chrono::seconds(options.timeout_seconds));
  std::string error;
  if (options.tls_implicit && !connection->start_tls(*tls, error)) {
    syslog(LOG_NOTICE, "TLS: rhost=%s: %s", or_local(peer), error.c_str());
    return nullptr;
  }
  return connection;
}

protocol::Features features(const Options& options, const io::TlsContext* tls, const io::Connection& connection) {
  return {.stls = tls && !options.tls_implicit,
          .tls_active = connection.tls_active(),
          .require_tls = options.require_tls};
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

void serve_user(protocol::Engine& engine, io::Connection& connection, SystemLogin& login,
                const io::TlsContext* tls, const std::string& peer) {
  connection.on_tick([&login] { login.tick(); });
  const char* how = run_session(engine, connection, tls, peer);
  if (login.logged_in()) log_session_end(login.user(), peer, engine.stats(), how);
  // The index is written and the locks go once the client has its last
  // reply and the end of the connection, before it lingers.
  connection.close_gracefully([&login] { login.end_session(); });
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
    if (!options.tls_implicit) io::write_all(STDOUT_FILENO, "-ERR [SYS/TEMP] Server configuration error\r\n");
    return 1;
  }
  if (auth::running_as_root()) return run_separated(options, tls.get());

  // Not root: nothing to separate; one process serves the invoking user.
  std::string peer = io::peer_address(STDIN_FILENO);
  auto connection = open_client(options, tls.get(), peer);
  if (!connection) return 1;
  SystemLogin login(options, peer);
  protocol::Engine engine(login, *connection, features(options, tls.get(), *connection));
  engine.greet();
  serve_user(engine, *connection, login, tls.get(), peer);
  return 0;
}

}  // namespace popd::server
