// Logging a user in: PAM or a passwd-file, the privilege switch and
// opening the maildrop.
// The protocol engine sees only the Authenticator interface.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "auth/account.h"
#include "auth/pam.h"
#include "sys/fd.h"
#include "mailbox/expiry.h"
#include "mailbox/store.h"
#include "options.h"
#include "protocol/maildrop.h"

namespace popd::server {

// The account a login of `user` would get, without its password: from
// --userdb's passwd-file, else the system's; `source` says where from,
// `why` why there is none (popd --explain).
std::optional<auth::Account> account_of(const Options& options, std::string user, std::string& source,
                                        std::string& why);

// The records a session keeps beside its index (DESIGN, "Files a session
// trusts"): INDEX followed by one of these.
inline constexpr const char* last_login_record = ".last-login";  // --login-delay
inline constexpr const char* retrieved_record = ".retrieved";    // --expire
inline constexpr const char* uidls_record = ".uidls";            // the log's uidl=

class SystemLogin final : public protocol::Authenticator {
 public:
  SystemLogin(const Options& options, std::string peer)
      : options_(options), peer_(std::move(peer)),
        first_valid_uid_(options.first_valid_uid.value_or(auth::system_uid_min())) {}

  // Which process start() returned in.
  enum class Role {
    refused,  // this one, with nothing started: the reply is for the client
    supervisor,  // this one, the session process forked: call supervise()
    session,  // the child, still root: call enter_session(), then open_mailbox()
  };
  struct Started {
    Role role;
    protocol::Login login;  // refused: the reply
  };
  // Authenticates (PAM, or the passwd-file of --userdb), checks the
  // account, opens the PAM session and forks the session process. A
  // failure is answered failure_delay after the attempt began, whatever
  // the check spent: the timing tells nothing.
  Started start(std::string_view user, std::string_view password);
  // The monitor's part: makes the dotlock when the session asks, keeps it
  // fresh, waits for the session (and `other_child`, ended with it, killed
  // with it past --max-session), closes the PAM session and exits.
  [[noreturn]] void supervise(pid_t other_child = 0);
  // The session's first part: every descriptor above 2 closed but `keep`
  // and the lock channel, then the switch to the user. A process that
  // cannot switch ends here.
  void enter_session(int keep = -1);
  // As the user: the dotlock (through the monitor), recovery, the mailbox.
  protocol::Login open_mailbox();

  // The one-process layout's Authenticator: all of the above. On success
  // it returns in the session process; the caller's process supervises.
  protocol::Login login(std::string_view user, std::string_view password) override;

  bool logged_in() const { return store_ != nullptr; }
  // Brings the mailbox's index up to date and releases the mailbox and its
  // locks (the session is over).
  void end_session();
  const std::string& user() const { return user_; }
  const std::string& peer() const { return peer_; }
  // For the session's log line, "HASH/NEW" of the unique-id listing
  // (mailbox/uidl_change.h), recorded for the next session; empty if no
  // mailbox is open.
  std::string uidl_change();
  // Periodic upkeep while the session waits: keeps the mailbox lock fresh.
  void tick();
  // The trace file (server/trace.h) the session process keeps and writes
  // to: enter_session() leaves it open.
  void keep_trace(int fd) { trace_fd_ = fd; }
  int trace_fd() const { return trace_fd_; }

 private:
  const Options& options_;
  std::string peer_;
  uid_t first_valid_uid_;
  bool shared_spool_ = false;
  std::string user_;
  // From start() on, for the process it returned in.
  std::optional<auth::Account> account_;
  std::string mailbox_;
  std::unique_ptr<auth::PamTransaction> pam_;  // the monitor's
  pid_t child_ = 0;                            // the monitor's: the session process
  sys::UniqueFd lock_channel_;                 // the end of the process start() returned in
  int trace_fd_ = -1;                          // not owned
  std::unique_ptr<mailbox::Store> store_;
  mailbox::ExpiringStore* expiring_ = nullptr;  // store_ itself, with --expire

  // A per-user path (--journal, --index, ...) for the logged-in account.
  std::string user_path(const std::string& path_template) const;
  // One of the records beside the index.
  std::string record_path(const char* record) const { return user_path(options_.index) + record; }
  // The mailbox in its format, locked (the dotlock already, if held), and the answer.
  protocol::Login open_store(bool dotlock_held);
  // The session's answer once the mailbox was opened, or refused (logged either way).
  protocol::Login finish_open(protocol::Login::Outcome outcome, const std::string& text, const std::string& notes,
                         std::unique_ptr<mailbox::Store> store);
};

}  // namespace popd::server
