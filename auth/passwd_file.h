// Virtual users' accounts in Dovecot's passwd-file format, one entry a line:
//   user:password:uid:gid:gecos:home:shell:extra fields
// Empty fields are allowed, and so are fewer (a line "user:password" is an
// entry whose uid, gid and home come from popd's options); '#' starts a
// comment line. User names may be "name@domain". The file is root's:
// read fresh by the monitor for every login, so an edit counts at the next.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace popd::auth {

struct PasswdEntry {
  std::string user;
  std::string password;      // the field, "{SCHEME}..." or a bare crypt(3) string
  std::optional<uid_t> uid;  // none: the --mail-user's
  std::optional<gid_t> gid;
  std::string home;          // empty: from --home
  std::size_t line = 0;      // in the file, for log lines
};

struct PasswdLookup {
  enum class Result {
    found,    // `entry` is the user's
    unknown,  // no entry of that name, or a malformed one (`error` says so): a client learns nothing from it
    failed,   // the file cannot be trusted or read: `error` says why
  };
  Result result = Result::unknown;
  PasswdEntry entry;
  std::string error;
  bool missing = false;  // failed because there is no such file
  std::vector<std::string> warnings;  // for syslog: a file others can read, ...
  // A password field of the file in its most common scheme and cost: an
  // unknown user's password is checked against it, so that an unknown
  // user costs what a known one does. Empty if the file has none.
  std::string dummy_password;
};

// The entry for `user` in the file at `path`. The file must be root's and
// writable by no one else (nor may its directory be changed by others).
PasswdLookup find_user(const std::string& path, std::string_view user);

// Parses one line; nullopt if it is malformed (no password field, a uid or
// gid that is not a number). A comment or an empty line gives an entry
// with no user.
std::optional<PasswdEntry> parse_entry(std::string_view line);

}  // namespace popd::auth
