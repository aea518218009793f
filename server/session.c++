#include "server/session.h"

#include <signal.h>
#include <syslog.h>
#include <unistd.h>

#include <memory>

#include "io/connection.h"
#include "io/tls.h"
#include "protocol/engine.h"
#include "server/login.h"

namespace popd::server {

namespace {

void log_end(const SystemLogin& login, const protocol::SessionStats& stats, const char* how) {
  syslog(LOG_INFO, "session end: user=%s rhost=%s retrieved=%llu messages/%llu bytes deleted=%llu: %s",
         login.user().c_str(), login.peer().empty() ? "local" : login.peer().c_str(),
         static_cast<unsigned long long>(stats.retrieved_messages),
         static_cast<unsigned long long>(stats.retrieved_bytes),
         static_cast<unsigned long long>(stats.deleted_messages), how);
}

}  // namespace

int serve(const Options& options) {
  ::signal(SIGPIPE, SIG_IGN);  // a gone client shows as EPIPE
  io::Connection::stop_on_termination_signals();
  ::openlog("popd", LOG_PID | LOG_NDELAY, LOG_MAIL);

  io::Connection connection(STDIN_FILENO, STDOUT_FILENO, std::chrono::seconds(options.timeout_seconds));
  std::string peer = connection.peer_address();
  // The key is read now, while popd may still be root.
  std::unique_ptr<io::TlsContext> tls;
  std::string error;
  if (options.tls_configured() && !(tls = io::TlsContext::load(options.tls, error))) {
    syslog(LOG_ERR, "TLS configuration: %s", error.c_str());
    if (!options.tls_implicit) connection.write("-ERR [SYS/TEMP] Server configuration error\r\n");
    connection.flush();
    return 1;
  }
  if (options.tls_implicit && !connection.start_tls(*tls, error)) {
    syslog(LOG_NOTICE, "TLS: rhost=%s: %s", peer.empty() ? "local" : peer.c_str(), error.c_str());
    return 1;
  }

  SystemLogin login(options, peer);
  protocol::Engine engine(login, connection,
                          {.stls = tls && !options.tls_implicit,
                           .tls_active = connection.tls_active(),
                           .require_tls = options.require_tls});
  connection.on_tick([&login] { login.tick(); });

  engine.greet();
  const char* how = "quit";
  std::string data;
  while (!engine.closed()) {
    // Answer every complete command, then flush once: pipelined commands
    // share writes, and nothing is held back while the client waits.
    while (engine.command_waiting() && !connection.failed()) engine.step();
    if (engine.closed()) break;
    if (engine.take_tls_request()) {
      // STLS: what the client sent after the command was sent in plaintext
      // and is dropped, never run as if it had come through TLS.
      engine.discard_pending_input();
      if (!connection.flush() || !connection.start_tls(*tls, error)) {
        syslog(LOG_NOTICE, "STLS: rhost=%s: %s", peer.empty() ? "local" : peer.c_str(), error.c_str());
        break;
      }
      engine.tls_started();
      continue;
    }
    if (!connection.flush()) {
      how = "connection lost, nothing committed";
      break;
    }
    auto result = connection.read(data);
    if (result == io::Connection::ReadResult::timeout) {
      engine.timed_out();
      how = "idle timeout, nothing committed";
      break;
    }
    if (result == io::Connection::ReadResult::stopped) {
      how = "stopped by a signal, nothing committed";
      break;
    }
    if (result == io::Connection::ReadResult::end) {
      how = "connection closed without QUIT, nothing committed";
      break;
    }
    engine.receive(data);
  }
  connection.flush();
  if (login.logged_in()) log_end(login, engine.stats(), how);
  return 0;
}

}  // namespace popd::server
