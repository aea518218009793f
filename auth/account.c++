#include "auth/account.h"

#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <fstream>
#include <string_view>
#include <vector>

namespace popd::auth {

namespace {

// getpwnam_r or getpwuid_r, with a buffer as large as the entry needs.
template <typename Lookup>
std::optional<Account> looked_up(Lookup lookup) {
  long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buffer(hint > 0 ? hint : 4096);
  passwd entry{};
  passwd* found = nullptr;
  int error;
  while ((error = lookup(&entry, buffer.data(), buffer.size(), &found)) == ERANGE && buffer.size() < (1 << 20))
    buffer.resize(buffer.size() * 2);
  if (error != 0 || !found) return std::nullopt;
  return Account{found->pw_name, found->pw_uid, found->pw_gid, found->pw_dir ? found->pw_dir : ""};
}

}  // namespace

std::optional<Account> Account::named(const std::string& name) {
  return looked_up([&](passwd* entry, char* buffer, std::size_t size, passwd** found) {
    return ::getpwnam_r(name.c_str(), entry, buffer, size, found);
  });
}

std::optional<Account> Account::with_uid(uid_t uid) {
  return looked_up([&](passwd* entry, char* buffer, std::size_t size, passwd** found) {
    return ::getpwuid_r(uid, entry, buffer, size, found);
  });
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
