// Becoming the user for good.
#pragma once

#include <pwd.h>

#include <string>

namespace popd::auth {

bool running_as_root();

// As root: the user's supplementary groups (before PAM's setcred, which may
// add to them).
bool set_user_groups(const passwd& user, std::string& error);

// As root: switches group and user ids to the user's and checks that root
// cannot be regained. Not root: checks that the process already is the user.
bool become_user(const passwd& user, std::string& error);

}  // namespace popd::auth
