// A Unix account as a value: what a login needs of the passwd entry.
//
// getpwnam() returns a pointer into one static buffer that the next lookup
// by anyone in the process overwrites, PAM modules included (a session
// module that looks up another user would turn the entry we hold into
// that user's). So the entry is copied once, before PAM runs further, and
// looked up again afterwards to see that it still names the same account.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

namespace popd::auth {

struct Account {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;

  // The entry for `name` (getpwnam_r); nullopt if there is none or the
  // lookup failed.
  static std::optional<Account> named(const std::string& name);
  // The same by uid (getpwuid_r).
  static std::optional<Account> with_uid(uid_t uid);

  bool operator==(const Account&) const = default;
};

// The smallest uid of an ordinary account: UID_MIN in /etc/login.defs
// (`path`), else 1000, Debian's.
uid_t system_uid_min(const char* path = "/etc/login.defs");

}  // namespace popd::auth
