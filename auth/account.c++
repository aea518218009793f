#include "auth/account.h"

#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <fstream>
#include <string_view>
#include <vector>

namespace popd::auth {

std::optional<Account> Account::named(const std::string& name) {
  long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buffer(hint > 0 ? hint : 4096);
  passwd entry{};
  passwd* found = nullptr;
  int error;
  while ((error = ::getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found)) == ERANGE &&
         buffer.size() < (1 << 20))
    buffer.resize(buffer.size() * 2);
  if (error != 0 || !found) return std::nullopt;
  return Account{found->pw_name, found->pw_uid, found->pw_gid, found->pw_dir ? found->pw_dir : ""};
}

uid_t system_uid_min(const char* path) {
  constexpr uid_t fallback = 1000;
  std::ifstream defs(path);
  for (std::string line; std::getline(defs, line);) {
    std::string_view rest(line);
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
    if (!rest.starts_with("UID_MIN")) continue;
    rest.remove_prefix(7);
    if (rest.empty() || (rest.front() != ' ' && rest.front() != '\t')) continue;
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
    uid_t value = 0;
    auto [end, error] = std::from_chars(rest.data(), rest.data() + rest.size(), value);
    if (error == std::errc() && end != rest.data()) return value;
  }
  return fallback;
}

}  // namespace popd::auth
