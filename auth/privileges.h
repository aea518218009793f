// Becoming the user for good.
#pragma once

#include <sys/types.h>

#include <string>

#include "auth/account.h"

namespace popd::auth {

bool running_as_root();

// As root: the user's supplementary groups from the group database
// (before PAM's setcred, which may add to them); or, for an account that
// is not a system user's (`system` false), none but its gid.
bool set_user_groups(const Account& user, bool system, std::string& error);

// As root: switches group and user ids to the user's and checks that root
// cannot be regained. Not root: checks that the process already is the user.
bool become_user(const Account& user, std::string& error);

// As root: acts with `uid` and `group` as the effective ids while it lives,
// as a setgid program run by the user would; the real and saved ids stay
// root's, so the user can neither signal nor trace the process meanwhile.
// Going back to root cannot fail short of a broken kernel; if it does, the
// process aborts rather than go on with the wrong ids.
class ActingAs {
 public:
  ActingAs(uid_t uid, gid_t group);
  ActingAs(const ActingAs&) = delete;
  ActingAs& operator=(const ActingAs&) = delete;
  ~ActingAs();
  bool ok() const { return ok_; }

 private:
  gid_t saved_group_;
  bool root_;
  bool ok_;
};

}  // namespace popd::auth
