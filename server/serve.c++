#include "server/serve.h"

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
#include "mailbox/format.h"
#include "mailbox/maildir/maildir.h"
#include "mailbox/mbox/spool.h"
#include "params.h"
#include "server/client.h"
#include "server/descriptors.h"
#include "server/hash_password.h"
#include "server/log.h"
#include "server/login.h"
#include "server/monitor.h"
#include "server/session.h"
#include "sys/fd.h"
#include "sys/file.h"
#include "sys/lifetime.h"

namespace popd::server {

int list_uids(const Options& options) {
  // Only reads: no PAM, no lock that would hold up a delivery, no index.
  std::string path = options.list_uids;
  mailbox::Format format = mailbox::take_format(path);
  if (mailbox::format_at(format, path) == mailbox::Format::maildir) {
    std::string out, error;
    if (!mailbox::maildir::list_uids(path, options.uidl_scheme, out, error)) {
      std::fprintf(stderr, "popd: %s: %s\n", path.c_str(), error.c_str());
      return 1;
    }
    return sys::write_all(STDOUT_FILENO, out) ? 0 : 1;
  }
  sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    std::fprintf(stderr, "popd: %s: %s\n", path.c_str(),
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
    std::fprintf(stderr, "popd: %s: %s\n", path.c_str(), e.what());
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "popd: %s: %s\n", path.c_str(), e.what());
  }
  return 1;
}

int serve(const Options& options) {
  if (options.hash_password) return hash_password_command(options.password_scheme);
  if (!options.list_uids.empty()) return list_uids(options);
  settle_standard_descriptors();
  // Once, on the socket every process of the connection shares.
  io::send_without_delay(STDOUT_FILENO);
  ::signal(SIGPIPE, SIG_IGN);  // a gone client shows as EPIPE
  sys::stop_on_termination_signals();
  sys::limit_session(std::chrono::seconds(options.max_session_seconds));
  sys::limit_login(std::chrono::seconds(options.login_timeout_seconds));
  open_log();

  // As root the pre-auth process alone loads the key (server/preauth.h).
  if (auth::running_as_root()) return run_monitor(options);

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
