// One PAM transaction (Linux-PAM), released on every exit path.
#pragma once

#include <security/pam_appl.h>

#include <string>
#include <string_view>

namespace popd::auth {

class PamTransaction {
 public:
  // Starts a transaction for `user`; PAM_RHOST is set when `remote_host` is
  // not empty. ok() tells whether that worked.
  PamTransaction(const std::string& service, const std::string& user, const std::string& remote_host);
  ~PamTransaction();
  PamTransaction(const PamTransaction&) = delete;
  PamTransaction& operator=(const PamTransaction&) = delete;

  bool ok() const { return status_ == PAM_SUCCESS; }
  int status() const { return status_; }
  std::string error() const;

  // Each returns the PAM status and keeps it for error() and pam_end.
  int authenticate(std::string_view password);
  int check_account();
  int open_session();  // pam_setcred(ESTABLISH) and pam_open_session
  // The user name PAM settled on (modules may map the one given).
  std::string user() const;
  // In a child process after fork: let go of the handle without closing the
  // session or deleting credentials; the parent does that.
  void abandon();

 private:
  struct Conversation {
    std::string_view user;
    std::string_view password;
  };
  static void no_delay(int status, unsigned microseconds, void* data);
  static int converse(int count, const pam_message** messages, pam_response** responses, void* data);

  pam_handle_t* handle_ = nullptr;
  int status_ = PAM_SUCCESS;
  Conversation conversation_;
  bool credentials_ = false;
  bool session_ = false;
};

}  // namespace popd::auth
