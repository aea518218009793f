#include "server/login.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>

#include "auth/pam.h"
#include "auth/privileges.h"
#include "auth/password.h"
#include "auth/virtual_user.h"
#include "sys/fd.h"
#include "sys/file.h"
#include "params.h"
#include "mailbox/expiry.h"
#include "mailbox/format.h"
#include "mailbox/uidl_change.h"
#include "mailbox/maildir/maildir.h"
#include "mailbox/mbox/spool.h"
#include "server/descriptors.h"
#include "server/handover.h"
#include "server/log.h"
#include "server/login_delay.h"
#include "sys/lifetime.h"

namespace popd::server {

using protocol::Login;
using Outcome = Login::Outcome;
using auth::Account;

namespace {

// What a client gets when its login succeeded but no session could start.
Login cannot_start() { return Login{Outcome::temporary, "Cannot start the session", nullptr, true}; }

// The mailbox's dotlock, taken by this process (root) for the session and
// removed as it was made: as the user, with the spool directory's group.
struct SessionLock {
  mailbox::DotLock lock;
  uid_t uid = 0;
  gid_t group = 0;

  SessionLock() = default;
  SessionLock(const SessionLock&) = delete;
  SessionLock& operator=(const SessionLock&) = delete;
  ~SessionLock() { release(); }
  void release() {
    if (!lock.held()) return;
    auth::ActingAs as(uid, group);
    lock.release();
  }
  void refresh() {
    if (!lock.held()) return;
    auth::ActingAs as(uid, group);
    lock.refresh();
  }
};

// In a spool directory that only the mail group may write (Debian's
// /var/mail, root:mail 2775), the session, which never has that group,
// could take the dotlock only through liblockfile's setgid helper: an exec
// to lock and another to unlock, most of a small mailbox's session. As root
// this process takes it instead, as that helper would: as the user, with
// the directory's group, for the user's own spool only. The lock names
// this process, which outlives the session and removes the lock after it.
// Elsewhere (a home directory, a sticky spool) nothing happens here and the
// session locks as before. A refusal comes back for the client.
std::optional<Login> lock_for_session(const std::string& mailbox, const auth::Account& account, bool shared,
                                      SessionLock& held) {
  if (!auth::running_as_root()) return std::nullopt;
  auto group = mailbox::spool_directory_group(mailbox);
  struct stat st;
  if (!group || ::lstat(mailbox.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != account.uid)
    return std::nullopt;
  auth::ActingAs as(account.uid, *group);
  if (!as.ok()) return std::nullopt;
  std::string error, note;
  mailbox::LockStatus status = mailbox::DotLock::acquire(mailbox, held.lock, error, note, shared);
  if (!note.empty())
    syslog(LOG_WARNING, "mailbox: user=%s mailbox=%s: %s", escaped(account.name).c_str(), escaped(mailbox).c_str(),
           printable(note).c_str());
  Login refused{Outcome::in_use, "Mailbox is locked by another session", nullptr, true};
  switch (status) {
    case mailbox::LockStatus::locked:
      held.uid = account.uid;
      held.group = *group;
      return std::nullopt;
    case mailbox::LockStatus::busy: break;
    case mailbox::LockStatus::failed: refused = {Outcome::temporary, "Cannot lock mailbox: " + error, nullptr, true};
  }
  syslog(LOG_WARNING, "session: user=%s mailbox=%s: %s", escaped(account.name).c_str(), escaped(mailbox).c_str(),
         printable(refused.text).c_str());
  return refused;
}

// The dotlock on request of the session (lock_for_session), on the lock
// channel (server/handover.h). A session that does not ask in time gets
// nothing: it cannot have its connection.
void answer_lock_request(int channel, const std::string& mailbox, const Account& account, bool shared,
                         SessionLock& lock) {
  using handover::Tag;
  if (!sys::wait_readable(channel, std::chrono::steady_clock::now() + params::handover_wait + params::local_margin))
    return;
  auto request = handover::receive(channel);
  if (!request || !handover::is_lock_request(*request)) return;
  auto refused = lock_for_session(mailbox, account, shared, lock);
  Tag answer = refused ? (refused->outcome == Outcome::in_use ? Tag::lock_busy : Tag::lock_failed)
               : lock.lock.held() ? Tag::lock_held
                                  : Tag::lock_none;
  handover::send(channel, handover::encode_lock_answer(answer, refused ? refused->text : ""));
}

// The session's side: asks, and waits as long as the monitor may wait for
// the dotlock. A refusal comes back for the client.
std::optional<Login> request_lock(int channel, bool& dotlock_held) {
  using handover::Tag;
  std::optional<std::string> message;
  if (handover::send(channel, handover::encode_lock_request()) &&
      sys::wait_readable(channel, std::chrono::steady_clock::now() + params::lock_wait + params::local_margin))
    message = handover::receive(channel);
  auto answer = message ? handover::decode_lock_answer(*message) : std::nullopt;
  if (!answer) return cannot_start();
  switch (answer->tag) {
    case Tag::lock_held: dotlock_held = true; return std::nullopt;
    case Tag::lock_none: return std::nullopt;
    case Tag::lock_busy: return Login{Outcome::in_use, answer->text, nullptr, true};
    default: return Login{Outcome::temporary, answer->text, nullptr, true};
  }
}

// Waits for the session child, then lets the PAM transaction close the
// session as root. Never returns.
[[noreturn]] void wait_for_session(pid_t child, pid_t pre_auth, std::unique_ptr<auth::PamTransaction> pam,
                            SessionLock& lock) {
  // The child owns the connection now; our copies would keep it open.
  null_on(STDIN_FILENO);
  null_on(STDOUT_FILENO);
  // A service manager signals the whole group: the child ends its session
  // cleanly, and we must outlive it to close the PAM session.
  for (int signal : {SIGTERM, SIGHUP, SIGINT}) ::signal(signal, SIG_IGN);
  // Under privilege separation the pre-auth process is a child too: it
  // exits after handing a plain connection over, or relays TLS until the
  // session's last reply has reached the client. The PAM session closes
  // when the session process ends; the monitor waits for both, so that a
  // service manager that ends the unit with its main process does not cut
  // the relay short.
  // Meanwhile the dotlock this process made is kept fresh here, every
  // params::lock_refresh, so that it is never taken for stale.
  // Both end by --max-session (the relay a little later); children that
  // do not (stopped by the user, or a bug) are killed, so that this root
  // process, the PAM session and the lock never outlive it by much.
  auto overdue = sys::connection_end();
  if (overdue != std::chrono::steady_clock::time_point::max()) overdue += params::relay_grace + params::local_margin;
  sigset_t children;
  sigemptyset(&children);
  sigaddset(&children, SIGCHLD);
  sigprocmask(SIG_BLOCK, &children, nullptr);
  int status = 0, session_status = 1;
  for (;;) {
    pid_t ended = ::waitpid(-1, &status, WNOHANG);
    if (ended < 0 && errno != EINTR) break;  // no child left
    if (ended == child) {
      session_status = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
      lock.release();
      pam.reset();
    }
    if (ended != 0) continue;
    auto now = std::chrono::steady_clock::now();
    if (now >= overdue) {
      syslog(LOG_WARNING, "session: pid %d outlived --max-session; killed", static_cast<int>(child));
      for (pid_t pid : {child, pre_auth})
        if (pid > 0) ::kill(pid, SIGKILL);
      overdue = std::chrono::steady_clock::time_point::max();
    }
    auto left = std::chrono::ceil<std::chrono::seconds>(overdue - now);
    timespec wait{std::min<long long>(left.count(), std::chrono::seconds(params::lock_refresh).count()), 0};
    if (::sigtimedwait(&children, nullptr, &wait) < 0 && errno == EAGAIN) lock.refresh();
  }
  lock.release();
  pam.reset();
  ::_exit(session_status);
}

constexpr const char* unavailable = "Authentication is unavailable, try again later";

// A login checked, before any session step: the account, or the refusal's
// outcome, reply text and reason for the log.
struct Checked {
  std::optional<Account> account;
  Outcome outcome = Outcome::rejected;
  std::string text;
  std::string why;
};

Checked refused(Outcome outcome, std::string text, std::string why) {
  return Checked{std::nullopt, outcome, std::move(text), std::move(why)};
}

// A virtual user's account: the entry's uid and gid, or --mail-user's;
// the entry's home, or --home's.
Checked virtual_account(const Options& options, const auth::PasswdEntry& entry) {
  Account account{entry.user, 0, 0, entry.home};
  if (entry.uid && entry.gid) {
    account.uid = *entry.uid;
    account.gid = *entry.gid;
  } else if (entry.uid || entry.gid) {
    return refused(Outcome::temporary, unavailable, "the entry has a uid or a gid without the other");
  } else if (options.mail_user.empty()) {
    return refused(Outcome::temporary, unavailable, "the entry has no uid and gid, and there is no --mail-user");
  } else if (auto mail_user = Account::named(options.mail_user)) {
    account.uid = mail_user->uid;
    account.gid = mail_user->gid;
  } else {
    return refused(Outcome::temporary, unavailable, "no --mail-user account " + options.mail_user);
  }
  if (account.home.empty()) account.home = expand_path(options.home_template, entry.user, "");
  if (account.home.empty()) return refused(Outcome::temporary, unavailable, "the entry has no home, and there is no --home");
  if (account.home[0] != '/') return refused(Outcome::temporary, unavailable, "the home is not absolute: " + account.home);
  return Checked{std::move(account), Outcome::accepted, {}, {}};
}

void lower(std::string& name) {
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

// --userdb passwd-file: the name (lowered in place, as Dovecot looks names
// up by default, %Lu) and password against the file.
Checked check_virtual_user(const Options& options, std::string& user, std::string_view password) {
  lower(user);
  // Never a path from a name that could leave its directory.
  if (!auth::valid_virtual_name(user)) return refused(Outcome::rejected, "", "not a virtual user's name");
  bool per_domain = options.passwd_file.find("%d") != std::string::npos;
  if (per_domain && user.find('@') == std::string::npos) return refused(Outcome::rejected, "", "no domain in the name");
  auto checked = auth::check_virtual_user(expand_path(options.passwd_file, user, ""), per_domain, user, password,
                                          options.allow_weak_schemes);
  for (const std::string& warning : checked.warnings) syslog(LOG_WARNING, "passwd-file: %s", printable(warning).c_str());
  using Result = auth::VirtualLogin::Result;
  if (checked.result == Result::unavailable) return refused(Outcome::temporary, unavailable, checked.why);
  if (checked.result == Result::rejected) return refused(Outcome::rejected, "", checked.why);
  Checked account = virtual_account(options, checked.entry);
  // Root's group would give the session root's group files.
  if (account.account && account.account->gid == 0)
    return refused(Outcome::rejected, "", "gid 0 may not serve a virtual user");
  return account;
}

// PAM: authenticate and check the account; `pam` keeps the transaction.
Checked check_pam_user(const std::string& user, std::string_view password, auth::PamTransaction& pam) {
  int status = pam.authenticate(password);
  if (status == PAM_AUTH_ERR || status == PAM_USER_UNKNOWN || status == PAM_MAXTRIES ||
      status == PAM_CRED_INSUFFICIENT)
    return refused(Outcome::rejected, "", pam.error());
  if (status != PAM_SUCCESS) return refused(Outcome::temporary, unavailable, pam.error());
  // An expired or locked account gets the words of a wrong password: the
  // reply must not tell a guesser that the password was right.
  status = pam.check_account();
  if (status != PAM_SUCCESS) return refused(Outcome::rejected, "", pam.error());
  // Copied now: PAM modules that run later may look up other users.
  std::string mapped = pam.user();
  auto account = auth::Account::named(mapped.empty() ? user : mapped);
  if (!account) return refused(Outcome::forbidden, "No such system account", "no passwd entry");
  return Checked{std::move(account), Outcome::accepted, {}, {}};
}

}  // namespace

std::optional<Account> account_of(const Options& options, std::string user, std::string& source, std::string& why) {
  if (options.passwd_file.empty()) {
    auto account = Account::named(user);
    if (!account) why = "no system account " + user;
    source = "the system's accounts (NSS), after PAM";
    return account;
  }
  lower(user);
  if (!auth::valid_virtual_name(user)) {
    why = "not a virtual user's name";
    return std::nullopt;
  }
  std::string path = expand_path(options.passwd_file, user, "");
  auto lookup = auth::find_user(path, user);
  if (lookup.result != auth::PasswdLookup::Result::found) {
    why = lookup.error.empty() ? path + ": no entry for " + user : lookup.error;
    return std::nullopt;
  }
  source = path + ":" + std::to_string(lookup.entry.line) + " (scheme " + auth::scheme_of(lookup.entry.password) + ")";
  Checked checked = virtual_account(options, lookup.entry);
  why = checked.why;
  return checked.account;
}

SystemLogin::Started SystemLogin::start(std::string_view user_name, std::string_view password) {
  // PAM's own delay is taken over (see PamTransaction).
  auto began = std::chrono::steady_clock::now();
  std::string user(user_name);
  auto fail = [&](Outcome outcome, std::string text, const std::string& why) {
    syslog(LOG_NOTICE, "login failed: user=%s rhost=%s reason=%s", escaped(user).c_str(), or_local(peer_),
           printable(why).c_str());
    std::this_thread::sleep_until(began + options_.failure_delay);
    return Started{Role::refused, Login{outcome, std::move(text)}};
  };
  auto cannot = [] { return Started{Role::refused, cannot_start()}; };

  std::unique_ptr<auth::PamTransaction> pam;
  Checked checked;
  if (!options_.passwd_file.empty()) {
    checked = check_virtual_user(options_, user, password);
  } else {
    pam = std::make_unique<auth::PamTransaction>(options_.pam_service, user, peer_);
    checked = check_pam_user(user, password, *pam);
  }
  if (!checked.account) return fail(checked.outcome, checked.text, checked.why);
  std::optional<Account>& account = checked.account;
  // Before any session step: root and system accounts never get one, and
  // the reply is again a wrong password's.
  if (account->uid == 0) return fail(Outcome::rejected, "", "uid 0 may not log in");
  if (account->uid < first_valid_uid_) return fail(Outcome::rejected, "", "uid below --first-valid-uid");
  if (!auth::running_as_root() && account->uid != ::getuid())
    return fail(Outcome::forbidden, "This server serves only the user it runs as", "not the invoking user");

  std::string error;
  // A virtual user's name is not a system account's: /etc/group's
  // memberships of that name are not its.
  if (!auth::set_user_groups(*account, pam != nullptr, error)) {
    syslog(LOG_ERR, "login: user=%s: %s", escaped(user).c_str(), error.c_str());
    return cannot();
  }
  if (pam && pam->open_session() != PAM_SUCCESS) {
    syslog(LOG_ERR, "login: user=%s: PAM session: %s", escaped(user).c_str(), pam->error().c_str());
    return cannot();
  }
  if (pam && Account::named(account->name) != account) {
    syslog(LOG_ERR, "login: user=%s: the account changed during the PAM session", escaped(user).c_str());
    return cannot();
  }
  user_ = account->name;
  syslog(LOG_INFO, "login: user=%s rhost=%s", escaped(user_).c_str(), or_local(peer_));
  mailbox_ = expand_path(options_.mailbox, account->name, account->home);
  shared_spool_ = options_.shared_spool || mailbox::on_shared_file_system(mailbox_);

  // The session asks this process for the dotlock on this socket once it
  // is ready to open the mailbox (its connection handed over).
  int lock_pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, lock_pair) != 0) return cannot();
  sys::UniqueFd monitor_end(lock_pair[0]), session_end(lock_pair[1]);
  pid_t child = ::fork();
  if (child < 0) {
    syslog(LOG_ERR, "login: user=%s: fork: %s", escaped(user_).c_str(), std::strerror(errno));
    return cannot();
  }
  account_ = std::move(account);
  if (child > 0) {
    child_ = child;
    pam_ = std::move(pam);
    lock_channel_ = std::move(monitor_end);
    return {Role::supervisor, {}};
  }
  sys::logged_in();  // --max-session from here, not --login-timeout
  if (pam) pam->abandon();
  lock_channel_ = std::move(session_end);
  return {Role::session, {}};
}

void SystemLogin::supervise(pid_t other_child) {
  SessionLock lock;
  answer_lock_request(lock_channel_.get(), mailbox_, *account_, shared_spool_, lock);
  lock_channel_.reset();
  wait_for_session(child_, other_child, std::move(pam_), lock);
}

void SystemLogin::enter_session(int keep) {
  // Nothing of the monitor's but what the caller keeps and the lock
  // channel: not PAM's descriptors, not the channel to the pre-auth process.
  close_all_but({keep, lock_channel_.get(), trace_fd_});
  std::string error;
  if (!auth::become_user(*account_, error)) {
    // Still root, or someone else: touch nothing, answer nothing.
    syslog(LOG_ERR, "session: user=%s: %s", escaped(user_).c_str(), error.c_str());
    ::_exit(1);
  }
}

std::string SystemLogin::user_path(const std::string& path_template) const {
  return expand_path(path_template, account_->name, account_->home);
}

Login SystemLogin::open_mailbox() {
  const auth::Account& account = *account_;
  // Looked at again as the user: root may not see a root-squashed home.
  shared_spool_ = options_.shared_spool || mailbox::on_shared_file_system(mailbox_);
  bool dotlock_held = false;
  // Before the mailbox is locked or read: that is what the delay spares.
  std::string last_login = record_path(last_login_record);
  auto now = std::chrono::system_clock::now();
  if (options_.login_delay_seconds > 0) {
    auto left = login_delay_left(last_login, account.uid, std::chrono::seconds(options_.login_delay_seconds), now);
    if (!left.note.empty()) syslog(LOG_WARNING, "session: user=%s: %s", escaped(user_).c_str(), printable(left.note).c_str());
    if (left.wait.count() > 0)
      return finish_open(Outcome::too_soon, "Logged in too recently: try again in " + std::to_string(left.wait.count()) +
                                                " seconds", "", nullptr);
  }
  if (auto refused = request_lock(lock_channel_.get(), dotlock_held)) return *refused;
  lock_channel_.reset();
  Login login = open_store(dotlock_held);
  std::string error;
  if (login.outcome == Outcome::accepted && options_.login_delay_seconds > 0 &&
      !record_login(last_login, account.uid, now, error))
    syslog(LOG_WARNING, "session: user=%s: %s", escaped(user_).c_str(), printable(error).c_str());
  return login;
}

Login SystemLogin::open_store(bool dotlock_held) {
  // The one place a mailbox format is chosen.
  mailbox::StateFiles files{user_path(options_.journal), user_path(options_.index), user_path(options_.uidvalidity)};
  if (mailbox::format_at(options_.mailbox_format, mailbox_) == mailbox::Format::maildir) {
    auto opened = mailbox::maildir::Maildir::open(mailbox_, files, {options_.uidl_scheme, options_.maildir_mark_seen});
    return finish_open(opened.outcome, opened.text, opened.notes, std::move(opened.maildir));
  }
  auto opened = mailbox::Spool::open(mailbox_, files, options_.uidl_scheme,
                                     {.dotlock_held = dotlock_held, .shared = shared_spool_});
  return finish_open(opened.outcome, opened.text, opened.notes, std::move(opened.spool));
}

Login SystemLogin::finish_open(Outcome outcome, const std::string& text, const std::string& notes,
                          std::unique_ptr<mailbox::Store> store) {
  if (!notes.empty())
    syslog(outcome == Outcome::accepted ? LOG_WARNING : LOG_ERR, "mailbox: user=%s mailbox=%s: %s",
           escaped(user_).c_str(), escaped(mailbox_).c_str(), printable(notes).c_str());
  if (outcome != Outcome::accepted) {
    syslog(LOG_WARNING, "session: user=%s mailbox=%s: %s", escaped(user_).c_str(), escaped(mailbox_).c_str(),
           printable(text).c_str());
    return Login{outcome, text, nullptr, true};
  }
  if (options_.expire_days >= 0) {
    auto expiring = std::make_unique<mailbox::ExpiringStore>(std::move(store), record_path(retrieved_record),
                                                             account_->uid, std::chrono::days(options_.expire_days));
    expiring_ = expiring.get();
    store = std::move(expiring);
  }
  store_ = std::move(store);
  return Login{Outcome::accepted, "", store_.get()};
}

Login SystemLogin::login(std::string_view user, std::string_view password) {
  Started started = start(user, password);
  switch (started.role) {
    case Role::refused: return started.login;
    case Role::supervisor: supervise();  // never returns
    case Role::session: break;
  }
  enter_session();
  return open_mailbox();
}

void SystemLogin::end_session() {
  if (expiring_ && expiring_->expired() > 0)
    syslog(LOG_INFO, "expire: user=%s expired=%zu", escaped(user_).c_str(), expiring_->expired());
  if (expiring_ && !expiring_->note().empty())
    syslog(LOG_WARNING, "expire: user=%s: %s", escaped(user_).c_str(), printable(expiring_->note()).c_str());
  expiring_ = nullptr;
  std::string error;
  if (store_ && !store_->save_index(error))
    syslog(LOG_DEBUG, "session: user=%s: %s", escaped(user_).c_str(), printable(error).c_str());
  store_.reset();
}

std::string SystemLogin::uidl_change() {
  if (!store_) return {};
  auto change = mailbox::record_uidl_change(*store_, record_path(uidls_record), account_->uid);
  if (!change.note.empty())
    syslog(LOG_WARNING, "session: user=%s: %s", escaped(user_).c_str(), printable(change.note).c_str());
  return change.hash + "/" + (change.added ? std::to_string(*change.added) : "-");
}

void SystemLogin::tick() {
  if (store_) store_->refresh_lock();
}

}  // namespace popd::server
