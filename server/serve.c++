#include "server/serve.h"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <system_error>
#include <utility>

#include "auth/privileges.h"
#include "mailbox/format.h"
#include "mailbox/maildir/maildir.h"
#include "mailbox/mbox/spool.h"
#include "params.h"
#include "server/client.h"
#include "server/descriptors.h"
#include "server/explain.h"
#include "server/hash_password.h"
#include "server/log.h"
#include "server/login.h"
#include "server/monitor.h"
#include "server/session.h"
#include "server/trace.h"
#include "sys/fd.h"
#include "sys/file.h"
#include "sys/lifetime.h"

namespace popd::server {
namespace {

// --trace-dir in the one-process layout: what was held goes into a file
// of the invoking user's at the first login attempt, as the monitor's
// would be made at the first login request.
class TracedLogin final : public protocol::Authenticator {
 public:
  TracedLogin(SystemLogin& login, SessionTrace& trace, const Options& options, const std::string& peer)
      : login_(login), trace_(trace), options_(options), peer_(peer) {}

  protocol::Login login(std::string_view user, std::string_view password) override {
    if (!file_.fd && !tried_) {
      tried_ = true;
      if (auto me = auth::Account::with_uid(::getuid())) file_ = create_trace_file(options_, me->name, peer_);
      if (file_.fd) trace_.attach(file_.fd.get());
      login_.keep_trace(file_.fd.get());
    }
    return login_.login(user, password);
  }

 private:
  SystemLogin& login_;
  SessionTrace& trace_;
  const Options& options_;
  const std::string& peer_;
  TraceFile file_;
  bool tried_ = false;
};

}  // namespace

int serve(const Options& options) {
  if (options.hash_password) return hash_password_command(options.password_scheme);
  if (!options.list_uids.empty()) return list_uids(options);
  if (!options.explain_user.empty()) return explain(options);
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
  // The only account this process serves is the one it runs as.
  SessionTrace trace;
  TracedLogin traced(login, trace, options, peer);
  bool tracing = !options.trace_dir.empty();
  protocol::Engine engine(tracing ? static_cast<protocol::Authenticator&>(traced) : login, *connection,
                          features(options, tls->get(), *connection), tracing ? &trace : nullptr);
  engine.greet();
  serve_user(engine, *connection, login, tls->get(), peer, false);
  return 0;
}

}  // namespace popd::server
