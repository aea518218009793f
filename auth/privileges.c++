#include "auth/privileges.h"

#include <grp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "sys/file.h"

namespace popd::auth {

bool running_as_root() { return ::geteuid() == 0; }

bool set_user_groups(const Account& user, bool system, std::string& error) {
  if (!running_as_root()) return true;
  if (system ? ::initgroups(user.name.c_str(), user.gid) == 0 : ::setgroups(1, &user.gid) == 0) return true;
  error = "cannot set the groups: " + sys::error_text(errno);
  return false;
}

bool become_user(const Account& user, std::string& error) {
  if (running_as_root()) {
    if (user.uid == 0) {
      error = "refusing to run a session as root";
      return false;
    }
    if (::setgid(user.gid) != 0 || ::setuid(user.uid) != 0) {
      error = "cannot switch to the user: " + sys::error_text(errno);
      return false;
    }
    if (::setuid(0) == 0 || ::seteuid(0) == 0) {
      error = "root could be regained after the switch";
      return false;
    }
    if (::getgid() != user.gid || ::getegid() != user.gid) {
      error = "group ids do not match the user";
      return false;
    }
  }
  if (::getuid() != user.uid || ::geteuid() != user.uid) {
    error = "popd runs as another user and can only serve that one";
    return false;
  }
  return true;
}

ActingAs::ActingAs(uid_t uid, gid_t group) : saved_group_(::getegid()), root_(running_as_root()) {
  ok_ = root_ && ::setresgid(-1, group, -1) == 0 && ::setresuid(-1, uid, -1) == 0;
}

ActingAs::~ActingAs() {
  if (!root_) return;
  if (::setresuid(-1, 0, -1) != 0 || ::setresgid(-1, saved_group_, -1) != 0) std::abort();
}

}  // namespace popd::auth
