#include "server/session.h"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cstdio>
#include <system_error>
#include <utility>

#include "auth/privileges.h"
#include "sys/fd.h"
#include "sys/file.h"
#include "io/proxy.h"
#include "io/tls.h"
#include "mailbox/spool.h"
#include "params.h"
#include "server/descriptors.h"
#include "server/log.h"
#include "server/login.h"
#include "server/privsep.h"
#include "sys/lifetime.h"

namespace popd::server {

namespace {

// When this connection began: popd starts with it.
const auto connection_start = std::chrono::steady_clock::now();

const char* result_of(Ending ending, const protocol::SessionStats& stats) {
  switch (ending) {
    case Ending::quit:
      return stats.commit_failed ? "commit-failed" : stats.too_many_failures ? "auth-failed" : "quit";
    case Ending::timeout: return "timeout";
    case Ending::time_limit: return "time-limit";
    case Ending::closed: return "closed";
    case Ending::signal: return "signal";
    case Ending::tls_failed: return "tls-failed";
    case Ending::lost: return "lost";
  }
  return "unknown";
}

}  // namespace

void log_session_end(const std::string& user, const std::string& peer, bool tls,
                     const protocol::SessionStats& stats, Ending ending) {
  std::chrono::duration<double> duration = std::chrono::steady_clock::now() - connection_start;
  auto n = [](std::uint64_t value) { return static_cast<unsigned long long>(value); };
  syslog(LOG_INFO,
         "session end: user=%s rhost=%s tls=%s auth=%s retr=%llu/%llu top=%llu dele=%llu kept=%llu/%llu "
         "duration=%.3f result=%s",
         user.empty() ? "-" : escaped(user).c_str(), or_local(peer), tls ? "yes" : "no",
         stats.auth.empty() ? "-" : stats.auth.c_str(), n(stats.retrieved_messages), n(stats.retrieved_bytes),
         n(stats.top_messages), n(stats.deleted_messages), n(stats.kept_messages), n(stats.kept_bytes),
         duration.count(), result_of(ending, stats));
}

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

std::optional<std::unique_ptr<io::TlsContext>> load_tls(const Options& options) {
  std::unique_ptr<io::TlsContext> tls;
  std::string error;
  if (options.tls_configured() && !(tls = io::TlsContext::load(options.tls, error))) {
    syslog(LOG_ERR, "TLS configuration: %s", error.c_str());
    if (!options.tls_implicit) sys::write_all(STDOUT_FILENO, "-ERR [SYS/TEMP] Server configuration error\r\n");
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
  return {.stls = tls && !options.tls_implicit,
          .tls_active = connection.tls_active(),
          .require_tls = options.require_tls};
}

Ending run_session(protocol::Engine& engine, io::Connection& connection, const io::TlsContext* tls,
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

void serve_user(protocol::Engine& engine, io::Connection& connection, SystemLogin& login,
                const io::TlsContext* tls, const std::string& peer, bool tls_relayed) {
  connection.on_tick([&login] { login.tick(); });
  Ending ending = run_session(engine, connection, tls, peer);
  // The user PAM accepted, else the last name the client tried.
  log_session_end(login.user().empty() ? engine.user() : login.user(), peer, connection.tls_active() || tls_relayed,
                  engine.stats(), ending);
  // The index is written and the locks go once the client has its last
  // reply and the end of the connection, before it lingers.
  connection.close_gracefully([&login] { login.end_session(); });
}

int list_uids(const Options& options) {
  // Only reads: no PAM, no lock that would hold up a delivery, no index.
  sys::UniqueFd fd(::open(options.list_uids.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    std::fprintf(stderr, "popd: %s: %s\n", options.list_uids.c_str(),
                 fd ? "not a regular file" : sys::error_text(errno).c_str());
    return 1;
  }
  try {
    mailbox::FileSource source(fd.get(), st.st_size);
    mailbox::Mbox box = mailbox::parse(source, options.uidl_scheme);
    // A UIDVALIDITY kept after its message was deleted is the owner's.
    const passwd* owner = ::getpwuid(st.st_uid);
    std::string refused;
    if (owner && mailbox::needs_validity(box.scheme) && !box.validity &&
        (box.validity = mailbox::read_validity(expand_path(options.uidvalidity, owner->pw_name, owner->pw_dir),
                                               st.st_uid, refused)))
      box.renumber();
    if (!refused.empty()) {
      std::fprintf(stderr, "popd: %s\n", refused.c_str());
      return 1;
    }
    std::string out;
    for (std::size_t i = 0; i < box.messages.size(); ++i) {
      out += std::to_string(i + 1) + " " + box.uid(i) + "\n";
      if (out.size() >= params::output_buffer) sys::write_all(STDOUT_FILENO, std::exchange(out, {}));
    }
    return sys::write_all(STDOUT_FILENO, out) ? 0 : 1;
  } catch (const mailbox::NotMbox& e) {
    std::fprintf(stderr, "popd: %s: %s\n", options.list_uids.c_str(), e.what());
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "popd: %s: %s\n", options.list_uids.c_str(), e.what());
  }
  return 1;
}

int serve(const Options& options) {
  if (!options.list_uids.empty()) return list_uids(options);
  settle_standard_descriptors();
  ::signal(SIGPIPE, SIG_IGN);  // a gone client shows as EPIPE
  sys::stop_on_termination_signals();
  sys::limit_session(std::chrono::seconds(options.max_session_seconds));
  sys::limit_login(std::chrono::seconds(options.login_timeout_seconds));
  open_log();

  // As root the pre-auth process alone loads the key (privsep.c++).
  if (auth::running_as_root()) return run_separated(options);

  // Not root: nothing to separate; one process serves the invoking user.
  auto tls = load_tls(options);
  if (!tls) return 1;
  auto client = client_address(options);
  if (!client) return 1;
  const std::string& peer = *client;
  auto connection = open_client(options, tls->get(), peer);
  if (!connection) return 1;
  SystemLogin login(options, peer);
  protocol::Engine engine(login, *connection, features(options, tls->get(), *connection));
  engine.greet();
  serve_user(engine, *connection, login, tls->get(), peer, false);
  return 0;
}

}  // namespace popd::server
