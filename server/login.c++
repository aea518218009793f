#include "server/login.h"

#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "auth/pam.h"
#include "auth/privileges.h"
#include "params.h"

namespace popd::server {

using protocol::Login;
using Outcome = Login::Outcome;

namespace {

const char* or_unknown(const std::string& peer) { return peer.empty() ? "local" : peer.c_str(); }

// Waits for the session child, then lets the PAM transaction close the
// session as root. Never returns.
[[noreturn]] void supervise(pid_t child, std::unique_ptr<auth::PamTransaction> pam) {
  // The child owns the connection now; our copies would keep it open.
  ::close(STDIN_FILENO);
  ::close(STDOUT_FILENO);
  // A service manager signals the whole group: the child ends its session
  // cleanly, and we must outlive it to close the PAM session.
  for (int signal : {SIGTERM, SIGHUP, SIGINT}) ::signal(signal, SIG_IGN);
  // Under privilege separation the pre-auth process is a child too: it
  // exits after handing a plain connection over, or relays TLS until the
  // session's last reply has reached the client. The PAM session closes
  // when the session process ends; the monitor waits for both, so that a
  // service manager that ends the unit with its main process does not cut
  // the relay short.
  int status = 0, session_status = 1;
  for (pid_t ended; (ended = ::waitpid(-1, &status, 0)) >= 0 || errno == EINTR;) {
    if (ended != child) continue;
    session_status = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    pam.reset();
  }
  pam.reset();
  ::_exit(session_status);
}

}  // namespace

Login SystemLogin::login(std::string_view user_name, std::string_view password) {
  // Every failure is answered failure_delay after the attempt began,
  // whatever PAM spent (pam_unix hashes only for known users): the timing
  // tells nothing. PAM's own delay is taken over (see PamTransaction).
  auto began = std::chrono::steady_clock::now();
  std::string user(user_name);
  auto pam = std::make_unique<auth::PamTransaction>(options_.pam_service, user, peer_);
  auto fail = [&](Outcome outcome, std::string text, const char* why) {
    syslog(LOG_NOTICE, "login failed: user=%s rhost=%s reason=%s", user.c_str(), or_unknown(peer_), why);
    std::this_thread::sleep_until(began + options_.failure_delay);
    return Login{outcome, std::move(text)};
  };

  int status = pam->authenticate(password);
  if (status == PAM_AUTH_ERR || status == PAM_USER_UNKNOWN || status == PAM_MAXTRIES ||
      status == PAM_CRED_INSUFFICIENT)
    return fail(Outcome::rejected, "", pam->error().c_str());
  if (status != PAM_SUCCESS)
    return fail(Outcome::temporary, "Authentication is unavailable, try again later", pam->error().c_str());
  status = pam->check_account();
  if (status != PAM_SUCCESS)
    return fail(Outcome::disabled, "Account is expired, locked or not permitted", pam->error().c_str());

  std::string mapped = pam->user();
  ::passwd* account = ::getpwnam(mapped.empty() ? user.c_str() : mapped.c_str());
  if (!account) return fail(Outcome::forbidden, "No such system account", "no passwd entry");
  if (!auth::running_as_root() && account->pw_uid != ::getuid())
    return fail(Outcome::forbidden, "This server serves only the user it runs as", "not the invoking user");

  std::string error;
  if (!auth::set_user_groups(*account, error)) {
    syslog(LOG_ERR, "login: user=%s: %s", user.c_str(), error.c_str());
    return Login{Outcome::temporary, "Cannot start the session", nullptr, true};
  }
  if (pam->open_session() != PAM_SUCCESS) {
    syslog(LOG_ERR, "login: user=%s: PAM session: %s", user.c_str(), pam->error().c_str());
    return Login{Outcome::temporary, "Cannot start the session", nullptr, true};
  }
  user_ = account->pw_name;
  syslog(LOG_INFO, "login: user=%s rhost=%s", user_.c_str(), or_unknown(peer_));

  pid_t child = ::fork();
  if (child < 0) {
    syslog(LOG_ERR, "login: user=%s: fork: %s", user_.c_str(), std::strerror(errno));
    return Login{Outcome::temporary, "Cannot start the session", nullptr, true};
  }
  if (child > 0) {
    if (on_fork_) on_fork_();
    supervise(child, std::move(pam));
  }
  in_session_process_ = true;
  pam->abandon();
  return start_session(*account);
}

Login SystemLogin::start_session(const ::passwd& account) {
  std::string error;
  if (!auth::become_user(account, error)) {
    syslog(LOG_ERR, "session: user=%s: %s", user_.c_str(), error.c_str());
    return Login{Outcome::forbidden, "Cannot switch to the user", nullptr, true};
  }
  std::string mailbox = mailbox::expand_path(options_.mailbox, account.pw_name, account.pw_dir);
  auto expand = [&](const std::string& path_template) {
    return mailbox::expand_path(path_template, account.pw_name, account.pw_dir);
  };
  auto opened = mailbox::Spool::open(
      mailbox, {expand(options_.journal), expand(options_.index), expand(options_.uidvalidity)}, options_.uidl_scheme);
  if (!opened.notes.empty())
    syslog(opened.outcome == Outcome::accepted ? LOG_WARNING : LOG_ERR, "mailbox: user=%s mailbox=%s: %s",
           user_.c_str(), mailbox.c_str(), opened.notes.c_str());
  if (opened.outcome != Outcome::accepted) {
    syslog(LOG_WARNING, "session: user=%s mailbox=%s: %s", user_.c_str(), mailbox.c_str(), opened.text.c_str());
    return Login{opened.outcome, opened.text, nullptr, true};
  }
  spool_ = std::move(opened.spool);
  return Login{Outcome::accepted, "", spool_.get()};
}

void SystemLogin::end_session() {
  std::string error;
  if (spool_ && !spool_->save_index(error)) syslog(LOG_DEBUG, "session: user=%s: %s", user_.c_str(), error.c_str());
  spool_.reset();
}

void SystemLogin::tick() {
  if (spool_) spool_->refresh_lock();
}

}  // namespace popd::server
