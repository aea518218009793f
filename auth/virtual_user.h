// A virtual user's login: the name, the passwd-file entry and the
// password. What account the session then runs as is the server's
// (server/login.c++): the entry's uid and gid, or --mail-user's.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "auth/passwd_file.h"

namespace popd::auth {

struct VirtualLogin {
  enum class Result {
    accepted,     // `entry` is the user's, and the password is right
    rejected,     // unknown user, wrong password, a scheme refused: [AUTH]
    unavailable,  // the file cannot be used: [SYS/TEMP]
  };
  Result result = Result::rejected;
  PasswdEntry entry;
  std::string why;                    // not accepted: for the log
  std::vector<std::string> warnings;  // for the log either way
};

// A name that may be a virtual user's: it reaches paths through %u, %n
// and %d, so letters, digits and "._+-=" only, one '@' at most, and no
// part that is empty or starts with '.'.
bool valid_virtual_name(std::string_view user);

// `path` is the passwd-file (%d expanded; `per_domain` if it was there,
// so that a missing file is a domain not served). Whatever the client's
// name and password, a refusal reads the same ([AUTH]) and costs about
// the same: a password not checked against the user's entry is checked
// against the file's most common kind of hash (or a fixed one).
VirtualLogin check_virtual_user(const std::string& path, bool per_domain, std::string_view user,
                                std::string_view password, bool allow_weak);

}  // namespace popd::auth
