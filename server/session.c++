#include "server/session.h"

#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <vector>

#include "io/ring.h"
#include "params.h"
#include "server/client.h"
#include "server/handover.h"
#include "server/log.h"
#include "server/login.h"
#include "server/trace.h"
#include "sys/file.h"

namespace popd::server {

using protocol::Login;

void serve_user(protocol::Engine& engine, io::Connection& connection, SystemLogin& login,
                const io::TlsContext* tls, const std::string& peer, bool tls_relayed) {
  connection.on_tick([&login] { login.tick(); });
  Ending ending = run_engine(engine, connection, tls, peer);
  // The user PAM accepted, else the last name the client tried.
  protocol::SessionStats stats = engine.stats();
  stats.uidl = login.uidl_change();
  log_session_end(login.user().empty() ? engine.user() : login.user(), peer, connection.tls_active() || tls_relayed,
                  stats, ending);
  // The index is written and the locks go once the client has its last
  // reply and the end of the connection, before it lingers.
  connection.close_gracefully([&login] { login.end_session(); });
}

namespace {

struct Received {
  std::string pending;
  bool direct = false;
  std::vector<sys::UniqueFd> fds;  // the client's input and output, or the ring and the doorbell
  handover::Mechanism mechanism;
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
  auto message = handover::receive(socket, &received.fds, handover::header_size);
  auto header = message ? handover::decode_header(*message) : std::nullopt;
  if (!header || received.fds.size() != 2) return std::nullopt;
  received.direct = header->direct;
  received.mechanism = header->mechanism;
  // Direct: the client's input and output as popd was started with them
  // (sockets under a spawner; a pipe, terminal or file when an
  // administrator runs a script through popd); relay: the ring (checked
  // when attached) and the doorbell socket.
  if (received.direct ? !is_stream(received.fds[0].get()) || !is_stream(received.fds[1].get())
                      : !is_socket(received.fds[1].get()))
    return std::nullopt;
  received.pending.resize(header->pending);
  for (std::size_t done = 0; done < header->pending;) {
    if (!sys::wait_readable(socket, deadline)) return std::nullopt;
    ssize_t n = ::read(socket, received.pending.data() + done, header->pending - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    done += n;
  }
  return received;
}

}  // namespace

int run_session_process(SystemLogin& system_login, sys::UniqueFd socket_end, const Options& options,
                        const std::string& peer) {
  int socket = socket_end.get();
  system_login.enter_session(socket);
  // The connection comes first: nothing is locked for a pre-auth process
  // that never hands it over.
  auto received = receive_handover(socket);
  if (!received) {
    syslog(LOG_ERR, "session: user=%s: no connection from the pre-auth process",
           escaped(system_login.user()).c_str());
    ::_exit(1);
  }
  Login login = system_login.open_mailbox();
  bool direct = received->direct;
  int in = direct ? received->fds[0].get() : socket;
  int out = direct ? received->fds[1].get() : socket;
  io::Connection connection(in, out, std::chrono::seconds(options.timeout_seconds));
  if (!direct) {
    std::string error;
    auto replies = io::Ring::attach(std::move(received->fds[0]), error);
    if (!replies) {
      syslog(LOG_ERR, "session: user=%s: %s", escaped(system_login.user()).c_str(), error.c_str());
      return 1;
    }
    connection.reply_through(std::move(*replies), std::move(received->fds[1]));
  }
  // Appended to the file the monitor began with the pre-auth part.
  std::optional<SessionTrace> trace;
  if (system_login.trace_fd() >= 0) trace.emplace(system_login.trace_fd());
  protocol::Engine engine(system_login, connection, session_features(options), trace ? &*trace : nullptr);
  engine.set_mechanism(handover::mechanism_name(received->mechanism));
  engine.apply_login(login);
  engine.receive(received->pending);
  serve_user(engine, connection, system_login, nullptr, peer, !direct);
  return 0;
}

}  // namespace popd::server
