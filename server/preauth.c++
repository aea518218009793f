#include "server/preauth.h"

#include <grp.h>
#include <sys/socket.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <string.h>  // explicit_bzero
#include <vector>

#include "io/relay.h"
#include "server/client.h"
#include "server/handover.h"
#include "server/log.h"
#include "server/sandbox.h"
#include "server/trace.h"
#include "sys/file.h"
#include "sys/lifetime.h"

namespace popd::server {
namespace {

using protocol::Login;

// With --trace-dir, the transcript so far goes to the monitor first.
void send_trace(int channel, const SessionTrace* trace) {
  if (trace) handover::send(channel, handover::encode_trace(trace->held()));
}

// Asks the monitor; on success the monitor hands over the session socket.
class MonitorAuthenticator final : public protocol::Authenticator {
 public:
  MonitorAuthenticator(int channel, const SessionTrace* trace) : channel_(channel), trace_(trace) {}

  Login login(std::string_view user, std::string_view password) override {
    send_trace(channel_, trace_);
    std::string request = handover::encode_login_request(user, password);
    bool sent = handover::send(channel_, request);
    explicit_bzero(request.data(), request.size());
    std::vector<sys::UniqueFd> fds;
    auto reply = sent ? handover::receive(channel_, &fds) : std::nullopt;
    if (fds.size() == 1) session_ = std::move(fds.front());
    auto result = reply ? handover::decode_reply(*reply) : std::nullopt;
    if (!result) return Login{Login::Outcome::temporary, "Authentication is unavailable, try again later", nullptr, true};
    return *result;
  }

  int session() const { return session_.get(); }

 private:
  int channel_;
  const SessionTrace* trace_;
  sys::UniqueFd session_;
};

// chroot to the empty directory and become the unprivileged account.
bool drop_to(const Unprivileged& account, const std::string& directory, std::string& error) {
  if (::chroot(directory.c_str()) != 0 || ::chdir("/") != 0) {
    error = "chroot " + directory + ": " + sys::error_text(errno);
    return false;
  }
  if (::setgroups(0, nullptr) != 0 || ::setgid(account.gid) != 0 || ::setuid(account.uid) != 0) {
    error = "cannot switch to the unprivileged account: " + sys::error_text(errno);
    return false;
  }
  if (::setuid(0) == 0 || ::getuid() != account.uid || ::getgid() != account.gid) {
    error = "root could be regained";
    return false;
  }
  return true;
}

// Without TLS the session gets the client itself and this process is done;
// with TLS (its state lives here) this process relays until the end.
void hand_over(io::Connection& client, int session, std::string_view pending, std::string_view mechanism,
               const Options& options) {
  bool direct = !client.tls_active();
  std::string message = handover::encode_handover(direct, handover::mechanism_of(mechanism), pending);
  if (direct) {
    const int fds[] = {client.input_fd(), client.output_fd()};
    handover::send(session, message, fds);
    return;
  }
  std::string error;
  auto replies = io::Ring::create(error);
  int doorbell[2];
  if (!replies || ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, doorbell) != 0) {
    syslog(LOG_ERR, "TLS relay: %s", replies ? sys::error_text(errno).c_str() : error.c_str());
    return;  // the session sees no hand-over and ends
  }
  sys::UniqueFd relay_end(doorbell[0]), session_end(doorbell[1]);
  const int fds[] = {replies->fd(), session_end.get()};
  if (!handover::send(session, message, fds)) return;
  session_end.reset();
  io::relay(client, session, *replies, relay_end.get(), std::chrono::seconds(options.timeout_seconds));
}

}  // namespace

int run_pre_auth(int channel, const Options& options, const Unprivileged& account, const std::string& peer) {
  // The key is read here, as root, before the chroot: this process needs
  // it for the handshake; the monitor, and so the session, never has it.
  auto loaded = load_tls(options);
  if (!loaded) {
    handover::send(channel, handover::encode_end_report(Ending::tls_failed, false));
    return 1;
  }
  const io::TlsContext* tls = loaded->get();
  std::string error;
  if (!drop_to(account, options.privsep_dir, error) || !confine_pre_auth(error)) {
    syslog(LOG_ERR, "privilege separation: %s", error.c_str());
    answer_configuration_error(options);
    handover::send(channel, handover::encode_end_report(Ending::lost, false));
    return 1;
  }
  auto connection = open_client(options, tls, peer);
  if (!connection) return 1;
  std::optional<SessionTrace> trace;
  if (!options.trace_dir.empty()) trace.emplace();
  MonitorAuthenticator authenticator(channel, trace ? &*trace : nullptr);
  protocol::Engine engine(authenticator, *connection, features(options, tls, *connection), trace ? &*trace : nullptr);
  engine.greet();
  Ending ending = run_engine(engine, *connection, tls, peer);
  sys::logged_in();  // the relay, if any, runs for the session
  if (engine.handed_off()) {
    hand_over(*connection, authenticator.session(), engine.pending_input(), engine.stats().auth, options);
    return 0;
  }
  // No session followed: the monitor logs the end.
  send_trace(channel, trace ? &*trace : nullptr);
  handover::send(channel, handover::encode_end_report(ending, connection->tls_active()));
  return 0;
}

}  // namespace popd::server
