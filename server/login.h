// Logging a user in: PAM, the privilege switch and opening the maildrop.
// The protocol engine sees only the Authenticator interface.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "auth/account.h"
#include "sys/fd.h"
#include "mailbox/spool.h"
#include "options.h"
#include "protocol/maildrop.h"

namespace popd::server {

class SystemLogin final : public protocol::Authenticator {
 public:
  SystemLogin(const Options& options, std::string peer)
      : options_(options), peer_(std::move(peer)),
        first_valid_uid_(options.first_valid_uid.value_or(auth::system_uid_min())) {}

  // On success this returns in a child process that runs as the user; the
  // parent stays behind to close the PAM session and never returns.
  protocol::Login login(std::string_view user, std::string_view password) override;

  bool logged_in() const { return spool_ != nullptr; }
  // Brings the mailbox's index up to date and releases the mailbox and its
  // locks (the session is over).
  void end_session();
  // True in the session process that login() forked, whatever happened then.
  bool in_session_process() const { return in_session_process_; }
  // Called in the parent right after the session process was forked, before
  // it settles down to wait (privilege separation passes the session on).
  void on_fork(std::function<void()> hook) { on_fork_ = std::move(hook); }
  // Called in the session process right after the fork, before every
  // descriptor but keep_in_session()'s is closed: the caller lets go of
  // what it holds, so that nothing closes those numbers again later.
  void on_session_fork(std::function<void()> hook) { on_session_fork_ = std::move(hook); }
  // Called in the session process, as the user, before it locks and opens
  // the mailbox (privilege separation receives the connection here); false
  // ends the process.
  void before_opening_mailbox(std::function<bool()> hook) { before_opening_mailbox_ = std::move(hook); }
  // The one descriptor above 2 the session process keeps besides what it
  // opens itself (the socket to the pre-auth process); all else is closed.
  void keep_in_session(int fd) { session_fd_ = fd; }
  // Another child of this process (the pre-auth process) that ends with
  // the session, killed with it if they outlive --max-session.
  void ends_with_session(pid_t pid) { other_child_ = pid; }
  const std::string& user() const { return user_; }
  const std::string& peer() const { return peer_; }
  // Periodic upkeep while the session waits: keeps the mailbox lock fresh.
  void tick();

 private:
  protocol::Login start_session(const auth::Account& account, const std::string& mailbox, sys::UniqueFd lock_channel);

  const Options& options_;
  std::string peer_;
  uid_t first_valid_uid_;
  bool shared_spool_ = false;
  std::string user_;
  std::unique_ptr<mailbox::Spool> spool_;
  bool in_session_process_ = false;
  int session_fd_ = -1;
  pid_t other_child_ = 0;
  std::function<void()> on_fork_, on_session_fork_;
  std::function<bool()> before_opening_mailbox_;
};

}  // namespace popd::server
