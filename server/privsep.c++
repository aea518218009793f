#include "server/privsep.h"

#include <grp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <span>
#include <vector>
#include <string.h>  // explicit_bzero

#include "auth/account.h"
#include "io/connection.h"
#include "sys/fd.h"
#include "sys/file.h"
#include "io/relay.h"
#include "params.h"
#include "protocol/engine.h"
#include "server/descriptors.h"
#include "server/log.h"
#include "server/sandbox.h"
#include "server/login.h"
#include "server/session.h"
#include "sys/lifetime.h"

namespace popd::server {
namespace {

using protocol::Login;

// --- The monitor channel: one SOCK_SEQPACKET message per request or reply.
// Request: user NUL password. Reply: outcome, close flag, text; with
// handed_off, the session socket rides along (SCM_RIGHTS).

constexpr std::size_t max_message = params::max_user_name + 1 + params::max_sasl_line + 64;
constexpr std::size_t max_fds = 2;

bool send_message(int channel, std::string_view data, std::span<const int> fds = {}) {
  iovec iov{const_cast<char*>(data.data()), data.size()};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(max_fds * sizeof(int))] = {};
  if (!fds.empty() && fds.size() <= max_fds) {
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(header), fds.data(), fds.size() * sizeof(int));
  }
  ssize_t n;
  while ((n = ::sendmsg(channel, &message, MSG_NOSIGNAL)) < 0 && errno == EINTR && !sys::stop_requested()) {
  }
  return n == static_cast<ssize_t>(data.size());
}

// Up to `size` bytes; nullopt when the other side is gone. Passed
// descriptors land in `fds` (closed if the caller wants none).
std::optional<std::string> receive_message(int channel, std::vector<sys::UniqueFd>* fds = nullptr,
                                           std::size_t size = max_message) {
  std::string data(size, '\0');
  iovec iov{data.data(), data.size()};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(max_fds * sizeof(int))] = {};
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  ssize_t n;
  while ((n = ::recvmsg(channel, &message, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR &&
         !sys::stop_requested()) {
  }
  for (cmsghdr* header = CMSG_FIRSTHDR(&message); n >= 0 && header; header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    std::size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(header) + i * sizeof(int), sizeof received);
      if (fds) fds->emplace_back(received);
      else ::close(received);
    }
  }
  if (n <= 0 || (message.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) return std::nullopt;
  data.resize(n);
  return data;
}

std::string encode_reply(const Login& login) {
  std::string reply;
  reply += static_cast<char>(login.outcome);
  reply += login.close ? '1' : '0';
  reply += login.text;
  return reply;
}

// --- The pre-authentication process ---

// After a connection that never logged in, the pre-auth process tells the
// monitor how it ended, for the log line: this byte (no user name starts
// with it), the Ending, and whether TLS was up.
constexpr char end_report = '\x01';

// Asks the monitor; on success the monitor hands over the session socket.
class MonitorAuthenticator final : public protocol::Authenticator {
 public:
  explicit MonitorAuthenticator(int channel) : channel_(channel) {}

  Login login(std::string_view user, std::string_view password) override {
    std::string request(user);
    request += '\0';
    request += password;
    bool sent = send_message(channel_, request);
    explicit_bzero(request.data(), request.size());
    std::vector<sys::UniqueFd> fds;
    auto reply = sent ? receive_message(channel_, &fds) : std::nullopt;
    if (fds.size() == 1) session_ = std::move(fds.front());
    Login result;
    if (!reply || reply->size() < 2 || (*reply)[0] > static_cast<char>(Login::Outcome::handed_off)) {
      result.outcome = Login::Outcome::temporary;
      result.text = "Authentication is unavailable, try again later";
      result.close = true;
      return result;
    }
    result.outcome = static_cast<Login::Outcome>((*reply)[0]);
    result.close = (*reply)[1] == '1';
    result.text = reply->substr(2);
    return result;
  }

  int session() const { return session_.get(); }

 private:
  int channel_;
  sys::UniqueFd session_;
};

struct Unprivileged {
  uid_t uid;
  gid_t gid;
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

// --- The hand-over from the pre-auth process to the session process, on
// the stream socket the monitor made for them: a header (mode, length of
// the pending input), the input the client pipelined after its login, and
// with the header two descriptors (SCM_RIGHTS): in direct mode the
// client's, in relay mode the reply ring and the doorbell (io/relay.h).

enum class Handover : char { direct = 'D', relay = 'R' };
// The login's mechanism, for the session's log line.
enum class Mechanism : char { user = 'U', sasl_plain = 'P' };
constexpr std::size_t handover_header = 2 + sizeof(std::uint32_t);

// Without TLS the session gets the client itself and this process is done;
// with TLS (its state lives here) this process relays until the end.
void hand_over(io::Connection& client, int session, std::string_view pending, std::string_view mechanism,
               const Options& options) {
  bool direct = !client.tls_active();
  std::string message(1, static_cast<char>(direct ? Handover::direct : Handover::relay));
  message += static_cast<char>(mechanism == "sasl-plain" ? Mechanism::sasl_plain : Mechanism::user);
  auto length = static_cast<std::uint32_t>(pending.size());
  message.append(reinterpret_cast<const char*>(&length), sizeof length);
  message += pending;
  if (direct) {
    const int fds[] = {client.input_fd(), client.output_fd()};
    send_message(session, message, fds);
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
  if (!send_message(session, message, fds)) return;
  session_end.reset();
  io::relay(client, session, *replies, relay_end.get(), std::chrono::seconds(options.timeout_seconds));
}

struct Received {
  std::string pending;
  bool direct = false;
  std::vector<sys::UniqueFd> fds;  // the client's input and output, or the ring and the doorbell
  std::string mechanism;
};

bool is_socket(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

// What a client connection can be: no directory, block device or the like.
bool is_stream(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 &&
         (S_ISSOCK(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode) || S_ISREG(st.st_mode));
}

// The session process checks what the pre-auth process sends it, as it
// checks what a client sends, and waits for it no longer than
// params::handover_wait: it locks the mailbox only once it has it.
std::optional<Received> receive_handover(int socket) {
  auto deadline = std::chrono::steady_clock::now() + params::handover_wait;
  Received received;
  if (!sys::wait_readable(socket, deadline)) return std::nullopt;
  auto header = receive_message(socket, &received.fds, handover_header);
  if (!header || header->size() != handover_header || received.fds.size() != 2) return std::nullopt;
  std::uint32_t length;
  std::memcpy(&length, header->data() + 2, sizeof length);
  auto mode = static_cast<Handover>((*header)[0]);
  auto mechanism = static_cast<Mechanism>((*header)[1]);
  received.direct = mode == Handover::direct;
  if (mode != Handover::direct && mode != Handover::relay) return std::nullopt;
  // Direct: the client's input and output as popd was started with them
  // (sockets under a spawner; a pipe, terminal or file when an
  // administrator runs a script through popd); relay: the ring (checked
  // when attached) and the doorbell socket.
  if (received.direct ? !is_stream(received.fds[0].get()) || !is_stream(received.fds[1].get())
                      : !is_socket(received.fds[1].get()))
    return std::nullopt;
  if (length > params::max_handover) return std::nullopt;
  if (mechanism != Mechanism::user && mechanism != Mechanism::sasl_plain) return std::nullopt;
  received.mechanism = mechanism == Mechanism::user ? "user" : "sasl-plain";
  received.pending.resize(length);
  for (std::size_t done = 0; done < length;) {
    if (!sys::wait_readable(socket, deadline)) return std::nullopt;
    ssize_t n = ::read(socket, received.pending.data() + done, length - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    done += n;
  }
  return received;
}

int pre_authentication(int channel, const Options& options, const Unprivileged& account, const std::string& peer) {
  // The key is read here, as root, before the chroot: this process needs
  // it for the handshake; the monitor, and so the session, never has it.
  auto loaded = load_tls(options);
  if (!loaded) {
    send_message(channel, std::string{end_report, static_cast<char>(Ending::tls_failed), '0'});
    return 1;
  }
  const io::TlsContext* tls = loaded->get();
  std::string error;
  if (!drop_to(account, options.privsep_dir, error) || !confine_pre_auth(error)) {
    syslog(LOG_ERR, "privilege separation: %s", error.c_str());
    if (!options.tls_implicit) sys::write_all(STDOUT_FILENO, "-ERR [SYS/TEMP] Server configuration error\r\n");
    send_message(channel, std::string{end_report, static_cast<char>(Ending::lost), '0'});
    return 1;
  }
  auto connection = open_client(options, tls, peer);
  if (!connection) return 1;
  MonitorAuthenticator authenticator(channel);
  protocol::Engine engine(authenticator, *connection, features(options, tls, *connection));
  engine.greet();
  Ending ending = run_session(engine, *connection, tls, peer);
  sys::logged_in();  // the relay, if any, runs for the session
  if (engine.handed_off()) {
    hand_over(*connection, authenticator.session(), engine.pending_input(), engine.stats().auth, options);
    return 0;
  }
  // No session followed: the monitor logs the end.
  std::string report{end_report, static_cast<char>(ending), connection->tls_active() ? '1' : '0'};
  send_message(channel, report);
  return 0;
}

// --- The session process (forked by SystemLogin, running as the user) ---

int session(int socket, std::optional<Received> handover, const Login& login, SystemLogin& system_login,
            const Options& options, const std::string& peer) {
  if (!handover) return 1;  // never: the hook ends the process without one
  bool direct = handover->direct;
  int in = direct ? handover->fds[0].get() : socket;
  int out = direct ? handover->fds[1].get() : socket;
  io::Connection connection(in, out, std::chrono::seconds(options.timeout_seconds));
  if (!direct) {
    std::string error;
    auto replies = io::Ring::attach(std::move(handover->fds[0]), error);
    if (!replies) {
      syslog(LOG_ERR, "session: user=%s: %s", escaped(system_login.user()).c_str(), error.c_str());
      return 1;
    }
    connection.reply_through(std::move(*replies), std::move(handover->fds[1]));
  }
  protocol::Engine engine(system_login, connection);
  engine.set_mechanism(handover->mechanism);
  engine.apply_login(login);
  engine.receive(handover->pending);
  serve_user(engine, connection, system_login, nullptr, peer, !direct);
  return 0;
}

// --- The monitor ---

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
  bool known = report.size() == 3 && report[1] >= 0 && report[1] <= static_cast<char>(Ending::lost);
  protocol::SessionStats stats;
  stats.too_many_failures = failures >= params::max_login_failures;
  log_session_end(user, peer, known && report[2] == '1', stats,
                  known ? static_cast<Ending>(report[1]) : Ending::lost);
}

}  // namespace

int run_separated(const Options& options) {
  // The PROXY protocol header comes from a listed proxy, before any byte
  // of the client's: the monitor reads it, and nothing else (DESIGN).
  auto client = client_address(options);
  if (!client) return 1;
  const std::string& peer = *client;
  std::string error;
  auto account = unprivileged_account(options, error);
  if (!account || !prepare_directory(options.privsep_dir, error)) {
    syslog(LOG_ERR, "privilege separation: %s", error.c_str());
    if (!options.tls_implicit) sys::write_all(STDOUT_FILENO, "-ERR [SYS/TEMP] Server configuration error\r\n");
    return 1;
  }
  int channel[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, channel) != 0) return 1;
  pid_t pre_auth = ::fork();
  if (pre_auth < 0) return 1;
  if (pre_auth == 0) {
    close_all_but({channel[1]});
    return pre_authentication(channel[1], options, *account, peer);
  }
  ::close(channel[1]);
  sys::UniqueFd monitor(channel[0]);
  // The client is the pre-auth process's now; the session gets a socket.
  null_on(STDIN_FILENO);
  null_on(STDOUT_FILENO);

  SystemLogin login(options, peer);
  login.ends_with_session(pre_auth);
  int failures = 0;
  std::string last_user, report;
  // The pre-auth process ends an unauthenticated connection at the login
  // deadline itself; one that does not (a bug, or an attacker in it) is
  // killed a little later, so that this root process does not stay.
  auto deadline = sys::session_end();  // --login-timeout's (limit_login)
  auto give_up = deadline == std::chrono::steady_clock::time_point::max() ? deadline
                                                                           : deadline + params::prelogin_grace;
  bool overdue = false;
  auto next_message = [&]() -> std::optional<std::string> {
    if (sys::wait_readable(monitor.get(), give_up)) return receive_message(monitor.get());
    overdue = true;
    return std::nullopt;
  };
  while (auto request = next_message()) {
    if (request->starts_with(end_report)) {
      report = *request;
      break;
    }
    // The pre-auth process is not trusted: check what it asks.
    auto nul = request->find('\0');
    std::string user = request->substr(0, nul);
    if (protocol::valid_user_name(user)) last_user = user;
    std::string_view password = nul == std::string::npos ? "" : std::string_view(*request).substr(nul + 1);
    Login result;
    if (nul == std::string::npos || !protocol::valid_user_name(user)) {
      result.outcome = Login::Outcome::rejected;
      if (!send_message(monitor.get(), encode_reply(result))) break;
      continue;
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) break;
    sys::UniqueFd session_end(pair[0]), relay_end(pair[1]);
    login.keep_in_session(session_end.get());
    login.on_fork([&] {
      Login handed;
      handed.outcome = Login::Outcome::handed_off;
      const int passed[] = {relay_end.get()};
      send_message(monitor.get(), encode_reply(handed), passed);
      session_end.reset();
      relay_end.reset();
      monitor.reset();
    });
    // The session keeps only its end; the rest is closed by number there.
    login.on_session_fork([&] {
      relay_end.reset();
      monitor.reset();
    });
    std::optional<Received> handover;
    login.before_opening_mailbox([&] {
      if (!(handover = receive_handover(session_end.get())))
        syslog(LOG_ERR, "session: user=%s: no connection from the pre-auth process", escaped(login.user()).c_str());
      return handover.has_value();
    });
    result = login.login(user, password);
    explicit_bzero(request->data(), request->size());
    if (login.in_session_process()) return session(session_end.get(), std::move(handover), result, login, options, peer);
    if (!send_message(monitor.get(), encode_reply(result))) break;
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
    if (message->starts_with(end_report)) report = *message;
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
  log_unauthenticated_end(report, last_user, failures, peer);
  return 0;
}

}  // namespace popd::server
