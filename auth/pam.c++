#include "auth/pam.h"

#include <cstdlib>
#include <cstring>

namespace popd::auth {

PamTransaction::PamTransaction(const std::string& service, const std::string& user,
                               const std::string& remote_host) {
  conversation_.user = user;
  pam_conv conv{&PamTransaction::converse, &conversation_};
  status_ = pam_start(service.c_str(), user.c_str(), &conv, &handle_);
  // Modules ask for a delay after a failure (pam_unix, pam_faildelay), of
  // random length; popd delays every failure itself, to a fixed time after
  // the attempt began, so PAM's delay is replaced by one that does nothing.
  if (status_ == PAM_SUCCESS)
    status_ = pam_set_item(handle_, PAM_FAIL_DELAY, reinterpret_cast<const void*>(&PamTransaction::no_delay));
  if (status_ == PAM_SUCCESS && !remote_host.empty())
    status_ = pam_set_item(handle_, PAM_RHOST, remote_host.c_str());
}

void PamTransaction::no_delay(int, unsigned, void*) {}

PamTransaction::~PamTransaction() {
  if (!handle_) return;
  if (session_) pam_close_session(handle_, PAM_SILENT);
  if (credentials_) pam_setcred(handle_, PAM_DELETE_CRED | PAM_SILENT);
  pam_end(handle_, status_);
}

void PamTransaction::abandon() {
  // PAM_DATA_SILENT: modules free what they keep for this handle in the
  // child without acting on it (no session closed, no credentials deleted
  // twice); the parent's copy ends the transaction for real.
  if (handle_) pam_end(handle_, status_ | PAM_DATA_SILENT);
  handle_ = nullptr;
}

std::string PamTransaction::error() const {
  const char* text = pam_strerror(handle_, status_);
  return text ? text : "PAM error";
}

// PAM asks its questions here. popd has no terminal and no client to ask:
// a prompt that hides its echo gets the password, one that shows it the
// user name, messages are dropped, and anything else (a new password, a
// one-time code) fails the conversation rather than answering wrongly.
// The replies are PAM's to free; on failure, those made are wiped first.
int PamTransaction::converse(int count, const pam_message** messages, pam_response** responses,
                             void* data) {
  auto* conversation = static_cast<Conversation*>(data);
  auto* replies = static_cast<pam_response*>(std::calloc(count, sizeof(pam_response)));
  if (!replies) return PAM_BUF_ERR;
  for (int i = 0; i < count; ++i) {
    std::string_view answer;
    switch (messages[i]->msg_style) {
      case PAM_PROMPT_ECHO_OFF: answer = conversation->password; break;
      case PAM_PROMPT_ECHO_ON: answer = conversation->user; break;
      case PAM_ERROR_MSG:
      case PAM_TEXT_INFO: continue;
      default:
        for (int j = 0; j < i; ++j) {
          if (replies[j].resp) explicit_bzero(replies[j].resp, std::strlen(replies[j].resp));
          std::free(replies[j].resp);
        }
        std::free(replies);
        return PAM_CONV_ERR;
    }
    replies[i].resp = strndup(answer.data(), answer.size());
  }
  *responses = replies;
  return PAM_SUCCESS;
}

int PamTransaction::authenticate(std::string_view password) {
  if (!ok()) return status_;
  conversation_.password = password;  // pam_start copied the pam_conv pointing here
  status_ = pam_authenticate(handle_, PAM_DISALLOW_NULL_AUTHTOK);
  conversation_.password = {};
  return status_;
}

int PamTransaction::check_account() {
  if (ok()) status_ = pam_acct_mgmt(handle_, PAM_DISALLOW_NULL_AUTHTOK);
  return status_;
}

// Credentials before the session, as the Linux-PAM guide orders them
// (pam_setcred(3)); each is undone in the destructor only if it was made.
int PamTransaction::open_session() {
  if (!ok()) return status_;
  status_ = pam_setcred(handle_, PAM_ESTABLISH_CRED);
  if (!ok()) return status_;
  credentials_ = true;
  status_ = pam_open_session(handle_, 0);
  session_ = ok();
  return status_;
}

// A module may map the name the client gave to another (pam_ldap, a
// lowercase mapping): the account served is PAM's user, not the client's.
std::string PamTransaction::user() const {
  const void* item = nullptr;
  if (pam_get_item(handle_, PAM_USER, &item) != PAM_SUCCESS || !item) return {};
  return static_cast<const char*>(item);
}

}  // namespace popd::auth
