#include "server/privsep.h"

#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string.h>  // explicit_bzero

#include "io/connection.h"
#include "io/fd.h"
#include "io/file.h"
#include "params.h"
#include "protocol/engine.h"
#include "server/login.h"
#include "server/session.h"

namespace popd::server {
namespace {

using protocol::Login;

const char* or_local(const std::string& peer) { return peer.empty() ? "local" : peer.c_str(); }

// --- The monitor channel: one SOCK_SEQPACKET message per request or reply.
// Request: user NUL password. Reply: outcome, close flag, text; with
// handed_off, the session socket rides along (SCM_RIGHTS).

constexpr std::size_t max_message = params::max_user_name + 1 + params::max_sasl_line + 64;

bool send_message(int channel, std::string_view data, int fd = -1) {
  iovec iov{const_cast<char*>(data.data()), data.size()};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(header), &fd, sizeof fd);
  }
  ssize_t n;
  while ((n = ::sendmsg(channel, &message, MSG_NOSIGNAL)) < 0 && errno == EINTR && !io::Connection::stop_requested()) {
  }
  return n == static_cast<ssize_t>(data.size());
}

// nullopt when the other side is gone. A passed descriptor lands in `fd`.
std::optional<std::string> receive_message(int channel, io::UniqueFd* fd = nullptr) {
  std::string data(max_message, '\0');
  iovec iov{data.data(), data.size()};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  ssize_t n;
  while ((n = ::recvmsg(channel, &message, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR &&
         !io::Connection::stop_requested()) {
  }
  if (n <= 0 || (message.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) return std::nullopt;
  for (cmsghdr* header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    int received;
    std::memcpy(&received, CMSG_DATA(header), sizeof received);
    if (fd) fd->reset(received);
    else ::close(received);
  }
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
    auto reply = sent ? receive_message(channel_, &session_) : std::nullopt;
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
  io::UniqueFd session_;
};

struct Unprivileged {
  uid_t uid;
  gid_t gid;
};

// chroot to the empty directory and become the unprivileged account.
bool drop_to(const Unprivileged& account, const std::string& directory, std::string& error) {
  if (::chroot(directory.c_str()) != 0 || ::chdir("/") != 0) {
    error = "chroot " + directory + ": " + io::error_text(errno);
    return false;
  }
  if (::setgroups(0, nullptr) != 0 || ::setgid(account.gid) != 0 || ::setuid(account.uid) != 0) {
    error = "cannot switch to the unprivileged account: " + io::error_text(errno);
    return false;
  }
  if (::setuid(0) == 0 || ::getuid() != account.uid || ::getgid() != account.gid) {
    error = "root could be regained";
    return false;
  }
  return true;
}

// After login: client bytes to the session, session bytes to the client.
// The session enforces the idle timeout; a client that stops reading is
// given up after it by Connection::flush.
void relay(io::Connection& client, int session, std::string_view pending) {
  std::string data;
  std::string buffer(params::output_buffer, '\0');
  // Until the session stops taking input (it may already have answered and
  // gone: a refused mailbox), its replies are still passed on to the end.
  bool client_open = io::write_all(session, pending);
  for (;;) {
    // A client that has said all it will (a half-close, as a piped script
    // does) still gets every reply: the session sees the end and finishes.
    pollfd fds[2] = {{client_open ? client.input_fd() : -1, POLLIN, 0}, {session, POLLIN, 0}};
    bool buffered = client_open && client.has_buffered_input();
    if (!buffered && ::poll(fds, 2, -1) < 0) {
      if (errno == EINTR && !io::Connection::stop_requested()) continue;
      return;
    }
    if (buffered || fds[0].revents) {
      if (client.read(data) == io::Connection::ReadResult::data) {
        client_open = io::write_all(session, data);
      } else {
        client_open = false;
        ::shutdown(session, SHUT_WR);
      }
    }
    if (fds[1].revents) {
      ssize_t n = ::read(session, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      client.write(std::string_view(buffer.data(), n));
      if (!client.flush()) return;
    }
  }
}

int pre_authentication(int channel, const Options& options, const io::TlsContext* tls,
                       const Unprivileged& account, const std::string& peer) {
  std::string error;
  if (!drop_to(account, options.privsep_dir, error)) {
    syslog(LOG_ERR, "privilege separation: %s", error.c_str());
    return 1;
  }
  io::Connection connection(STDIN_FILENO, STDOUT_FILENO, std::chrono::seconds(options.timeout_seconds));
  if (options.tls_implicit && !connection.start_tls(*tls, error)) {
    syslog(LOG_NOTICE, "TLS: rhost=%s: %s", or_local(peer), error.c_str());
    return 1;
  }
  MonitorAuthenticator authenticator(channel);
  protocol::Engine engine(authenticator, connection,
                          {.stls = tls && !options.tls_implicit,
                           .tls_active = connection.tls_active(),
                           .require_tls = options.require_tls});
  engine.greet();
  run_session(engine, connection, tls, peer);
  if (engine.handed_off()) relay(connection, authenticator.session(), engine.pending_input());
  return 0;
}

// --- The session process (forked by SystemLogin, running as the user) ---

int session(int socket, const Login& login, SystemLogin& system_login, const Options& options,
            const std::string& peer) {
  io::Connection connection(socket, socket, std::chrono::seconds(options.timeout_seconds));
  connection.on_tick([&system_login] { system_login.tick(); });
  protocol::Engine engine(system_login, connection);
  engine.apply_login(login);
  const char* how = run_session(engine, connection, nullptr, peer);
  if (system_login.logged_in()) log_session_end(system_login.user(), peer, engine.stats(), how);
  return 0;
}

// --- The monitor ---

std::optional<Unprivileged> unprivileged_account(const std::string& name) {
  const passwd* account = ::getpwnam(name.c_str());
  if (!account && name == "popd") account = ::getpwnam("nobody");
  if (!account || account->pw_uid == 0) return std::nullopt;
  return Unprivileged{account->pw_uid, account->pw_gid};
}

// The chroot directory: made if missing; it must be root's and not writable
// by anyone else, or the pre-auth process could plant files in it.
bool prepare_directory(const std::string& directory, std::string& error) {
  if (::mkdir(directory.c_str(), 0755) != 0 && errno != EEXIST) {
    error = "cannot create " + directory + ": " + io::error_text(errno);
    return false;
  }
  struct stat st;
  if (::lstat(directory.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022)) {
    error = directory + " must be a directory owned by root and writable only by root";
    return false;
  }
  return true;
}

}  // namespace

int run_separated(const Options& options, const io::TlsContext* tls) {
  std::string peer = io::peer_address(STDIN_FILENO);
  std::string error;
  auto account = unprivileged_account(options.privsep_user);
  if (!account) error = "no unprivileged account " + options.privsep_user;
  if (!account || !prepare_directory(options.privsep_dir, error)) {
    syslog(LOG_ERR, "privilege separation: %s", error.c_str());
    io::write_all(STDOUT_FILENO, "-ERR [SYS/TEMP] Server configuration error\r\n");
    return 1;
  }
  int channel[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, channel) != 0) return 1;
  pid_t pre_auth = ::fork();
  if (pre_auth < 0) return 1;
  if (pre_auth == 0) {
    ::close(channel[0]);
    return pre_authentication(channel[1], options, tls, *account, peer);
  }
  ::close(channel[1]);
  io::UniqueFd monitor(channel[0]);
  // The client is the pre-auth process's now; the session gets a socket.
  ::close(STDIN_FILENO);
  ::close(STDOUT_FILENO);

  SystemLogin login(options, peer);
  int failures = 0;
  while (auto request = receive_message(monitor.get())) {
    // The pre-auth process is not trusted: check what it asks.
    auto nul = request->find('\0');
    std::string user = request->substr(0, nul);
    std::string_view password = nul == std::string::npos ? "" : std::string_view(*request).substr(nul + 1);
    Login result;
    if (nul == std::string::npos || !protocol::valid_user_name(user)) {
      result.outcome = Login::Outcome::rejected;
      if (!send_message(monitor.get(), encode_reply(result))) break;
      continue;
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) break;
    io::UniqueFd session_end(pair[0]), relay_end(pair[1]);
    login.on_fork([&] {
      Login handed;
      handed.outcome = Login::Outcome::handed_off;
      send_message(monitor.get(), encode_reply(handed), relay_end.get());
      session_end.reset();
      relay_end.reset();
      monitor.reset();
    });
    result = login.login(user, password);
    explicit_bzero(request->data(), request->size());
    if (login.in_session_process()) {
      monitor.reset();
      relay_end.reset();
      return session(session_end.get(), result, login, options, peer);
    }
    if (!send_message(monitor.get(), encode_reply(result))) break;
    if (result.outcome == Login::Outcome::rejected && ++failures >= params::max_login_failures) break;
    if (result.close) break;
  }
  monitor.reset();
  int status = 0;
  while (::waitpid(pre_auth, &status, 0) < 0 && errno == EINTR) {
  }
  return 0;
}

}  // namespace popd::server
