#include "server/monitor.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <string.h>  // explicit_bzero

#include "auth/account.h"
#include "params.h"
#include "protocol/engine.h"
#include "server/client.h"
#include "server/descriptors.h"
#include "server/handover.h"
#include "server/log.h"
#include "server/per_ip.h"
#include "server/login.h"
#include "server/preauth.h"
#include "server/session.h"
#include "server/trace.h"
#include "sys/fd.h"
#include "sys/file.h"
#include "sys/lifetime.h"

namespace popd::server {
namespace {

using protocol::Login;

// The account the pre-auth process runs as: --privsep-user, or "nobody"
// when the default "popd" does not exist. Not with TLS or the PROXY
// protocol: the process then holds the TLS key and names the client for
// the log, and other daemons that run as nobody could signal it, or share
// its per-user limits; an administrator who means it names nobody.
std::optional<Unprivileged> unprivileged_account(const Options& options, std::string& error) {
  auto account = auth::Account::named(options.privsep_user);
  if (!account && options.privsep_user == "popd") {
    if (options.tls_configured() || options.proxy_protocol) {
      error = "no account popd for the pre-login process; with TLS or the PROXY protocol it needs one of its own "
              "(adduser --system popd), or say --privsep-user nobody";
      return std::nullopt;
    }
    account = auth::Account::named("nobody");
  }
  if (!account || account->uid == 0) {
    error = "no unprivileged account " + options.privsep_user;
    return std::nullopt;
  }
  return Unprivileged{account->uid, account->gid};
}

// The chroot directory: made if missing; it must be root's and not writable
// by anyone else, or the pre-auth process could plant files in it.
bool prepare_directory(const std::string& directory, std::string& error) {
  if (::mkdir(directory.c_str(), 0755) != 0 && errno != EEXIST) {
    error = "cannot create " + directory + ": " + sys::error_text(errno);
    return false;
  }
  struct stat st;
  if (::lstat(directory.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022)) {
    error = directory + " must be a directory owned by root and writable only by root";
    return false;
  }
  return true;
}

// The session-end line of a connection that never got a session, from
// the pre-auth process's report (checked: it is not trusted): lost if none.
void log_unauthenticated_end(const std::string& report, const std::string& user, int failures,
                             const std::string& peer) {
  handover::EndReport end = handover::decode_end_report(report);
  protocol::SessionStats stats;
  stats.too_many_failures = failures >= params::max_login_failures;
  log_session_end(user, peer, end.tls, stats, end.ending);
}

}  // namespace

int run_monitor(const Options& options) {
  // The PROXY protocol header comes from a listed proxy, before any byte
  // of the client's: the monitor reads it, and nothing else (DESIGN).
  auto client = client_address(options);
  if (!client) return 1;
  const std::string& peer = *client;
  std::string error;
  // Held by this process, which outlives the connection's others; they
  // close it right after their fork (close_all_but, close_range).
  SlotTaken slot;
  if (options.max_per_ip > 0) {
    slot = take_connection_slot(options.privsep_dir + "-per-ip", peer, options.max_per_ip);
    if (slot.full) {
      syslog(LOG_NOTICE, "too many connections: rhost=%s has %d (--max-per-ip); connection closed", or_local(peer),
             options.max_per_ip);
      if (!options.tls_implicit) sys::write_all(STDOUT_FILENO, "-ERR [SYS/TEMP] too many connections\r\n");
      // The reply first, then the end, and a moment for the peer to read
      // both: a proxy in front may otherwise see a reset and drop the reply.
      ::shutdown(STDOUT_FILENO, SHUT_WR);
      sys::wait_readable(STDIN_FILENO, std::chrono::steady_clock::now() + params::refusal_linger);
      protocol::SessionStats refused;
      refused.too_many_connections = true;
      log_session_end("", peer, false, refused, Ending::closed);
      return 0;
    }
    if (!slot.error.empty()) syslog(LOG_ERR, "--max-per-ip: %s; the connection is let through", slot.error.c_str());
  }
  auto account = unprivileged_account(options, error);
  if (!account || !prepare_directory(options.privsep_dir, error)) {
    syslog(LOG_ERR, "privilege separation: %s", error.c_str());
    answer_configuration_error(options);
    return 1;
  }
  int channel[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, channel) != 0) return 1;
  pid_t pre_auth = ::fork();
  if (pre_auth < 0) return 1;
  if (pre_auth == 0) {
    close_all_but({channel[1]});
    return run_pre_auth(channel[1], options, *account, peer);
  }
  ::close(channel[1]);
  sys::UniqueFd monitor(channel[0]);
  // The client is the pre-auth process's now; the session gets a socket.
  null_on(STDIN_FILENO);
  null_on(STDOUT_FILENO);

  SystemLogin login(options, peer);
  int failures = 0;
  std::string last_user, report, transcript;
  TraceFiles traces(options, peer);
  // The pre-auth process ends an unauthenticated connection at the login
  // deadline itself; one that does not (a bug, or an attacker in it) is
  // killed a little later, so that this root process does not stay.
  auto deadline = sys::session_end();  // --login-timeout's (limit_login)
  auto give_up = deadline == std::chrono::steady_clock::time_point::max() ? deadline
                                                                           : deadline + params::prelogin_grace;
  bool overdue = false;
  auto next_message = [&]() -> std::optional<std::string> {
    if (sys::wait_readable(monitor.get(), give_up)) return handover::receive(monitor.get());
    overdue = true;
    return std::nullopt;
  };
  while (auto request = next_message()) {
    if (handover::is_trace(*request)) {
      if (!options.trace_dir.empty()) transcript = handover::trace_of(*request);
      continue;
    }
    if (handover::is_end_report(*request)) {
      report = *request;
      break;
    }
    // The pre-auth process is not trusted: check what it asks.
    handover::LoginRequest asked = handover::decode_login_request(*request);
    explicit_bzero(request->data(), request->size());
    if (protocol::valid_user_name(asked.user)) last_user = asked.user;
    Login result;
    if (!asked.complete || !protocol::valid_user_name(asked.user)) {
      explicit_bzero(asked.password.data(), asked.password.size());
      result.outcome = Login::Outcome::rejected;
      if (!handover::send(monitor.get(), handover::encode_reply(result))) break;
      continue;
    }
    // Before the session forks: it appends to this user's file.
    traces.record(asked.user, transcript);
    login.keep_trace(traces.fd());
    // The socket the pre-auth process hands the connection over on.
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) break;
    sys::UniqueFd session_end(pair[0]), relay_end(pair[1]);
    SystemLogin::Started started = login.start(asked.user, asked.password);
    explicit_bzero(asked.password.data(), asked.password.size());
    switch (started.role) {
      case SystemLogin::Role::supervisor: {
        // The pre-auth process gets its end of the hand-over socket.
        Login handed{Login::Outcome::handed_off, "", nullptr, false};
        const int passed[] = {relay_end.get()};
        handover::send(monitor.get(), handover::encode_reply(handed), passed);
        session_end.reset();
        relay_end.reset();
        monitor.reset();
        login.supervise(pre_auth);  // never returns
      }
      case SystemLogin::Role::session:
        // The session keeps only its end; the rest is closed by number there.
        relay_end.reset();
        monitor.reset();
        return run_session_process(login, std::move(session_end), options, peer);
      case SystemLogin::Role::refused: result = started.login;
    }
    if (!handover::send(monitor.get(), handover::encode_reply(result))) break;
    // A reply that PAM made late still gives the pre-auth process its
    // grace to pass it on and end.
    give_up = std::max(give_up, std::chrono::steady_clock::now() + params::prelogin_grace);
    if (result.counts_as_failure() && ++failures >= params::max_login_failures) break;
    if (result.close) break;
  }
  // After the last login attempt the pre-auth process still reports how
  // the connection ended; nothing else is answered.
  while (report.empty()) {
    auto message = next_message();
    if (!message) break;
    if (handover::is_end_report(*message)) report = *message;
    if (handover::is_trace(*message) && !options.trace_dir.empty()) transcript = handover::trace_of(*message);
    explicit_bzero(message->data(), message->size());
  }
  if (overdue) {
    syslog(LOG_WARNING, "privilege separation: rhost=%s: the pre-login process outlived --login-timeout; killed",
           or_local(peer));
    ::kill(pre_auth, SIGKILL);
  }
  monitor.reset();
  int status = 0;
  while (::waitpid(pre_auth, &status, 0) < 0 && errno == EINTR) {
  }
  traces.record(last_user, transcript);
  log_unauthenticated_end(report, last_user, failures, peer);
  return 0;
}

}  // namespace popd::server
