#include "server/client.h"

#include <syslog.h>
#include <unistd.h>

#include "io/proxy.h"
#include "params.h"
#include "sys/file.h"
#include "sys/lifetime.h"

namespace popd::server {

std::optional<std::string> client_address(const Options& options) {
  std::string peer = io::peer_address(STDIN_FILENO);
  if (!options.proxy_protocol) return peer;
  if (!io::AddressList::parse(options.proxy_from)->contains(peer)) {
    syslog(LOG_WARNING, "PROXY protocol: rhost=%s is not in --proxy-from; connection closed", or_local(peer));
    return std::nullopt;
  }
  std::string error;
  auto source = io::read_proxy_header(STDIN_FILENO, params::proxy_header_wait, error);
  if (!source) {
    syslog(LOG_WARNING, "PROXY protocol: proxy=%s: %s; connection closed", or_local(peer), error.c_str());
    return std::nullopt;
  }
  return source->empty() ? peer : *source;  // a health check of the proxy's own
}

void answer_configuration_error(const Options& options) {
  if (!options.tls_implicit) sys::write_all(STDOUT_FILENO, "-ERR [SYS/TEMP] Server configuration error\r\n");
}

std::optional<std::unique_ptr<io::TlsContext>> load_tls(const Options& options) {
  std::unique_ptr<io::TlsContext> tls;
  std::string error;
  if (options.tls_configured() && !(tls = io::TlsContext::load(options.tls, error))) {
    syslog(LOG_ERR, "TLS configuration: %s", error.c_str());
    answer_configuration_error(options);
    return std::nullopt;
  }
  return tls;
}

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
  protocol::Features features = session_features(options);
  features.stls = tls && !options.tls_implicit;
  features.tls_active = connection.tls_active();
  features.require_tls = options.require_tls;
  return features;
}

protocol::Features session_features(const Options& options) {
  return {.outlook_no_nuls = options.outlook_no_nuls,
          .oe_ns_eoh = options.oe_ns_eoh,
          .login_delay = options.login_delay_seconds,
          .expire_days = options.expire_days};
}

Ending run_engine(protocol::Engine& engine, io::Connection& connection, const io::TlsContext* tls,
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
        return Ending::tls_failed;
      }
      engine.tls_started();
      continue;
    }
    if (!connection.flush()) return Ending::lost;
    switch (connection.read(data)) {
      case io::Connection::ReadResult::data: engine.receive(data); break;
      case io::Connection::ReadResult::timeout:
        if (sys::session_expired()) {
          engine.abort(engine.state() == protocol::Engine::State::authorization
                           ? "Login time limit reached, closing connection"
                           : "Session time limit reached, closing connection");
          connection.flush();
          return Ending::time_limit;
        }
        engine.abort("Idle timeout, closing connection");
        connection.flush();
        return Ending::timeout;
      case io::Connection::ReadResult::stopped: return Ending::signal;
      case io::Connection::ReadResult::end: return Ending::closed;
    }
  }
  return connection.flush() ? Ending::quit : Ending::lost;
}

}  // namespace popd::server
