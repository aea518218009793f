#include "auth/virtual_user.h"

#include <cctype>

#include "auth/password.h"
#include "params.h"

namespace popd::auth {

bool valid_virtual_name(std::string_view user) {
  if (user.empty() || user.size() > params::max_user_name) return false;
  std::size_t at = user.find('@');
  if (at != std::string_view::npos && user.find('@', at + 1) != std::string_view::npos) return false;
  for (std::string_view part : {user.substr(0, at), at == std::string_view::npos ? "x" : user.substr(at + 1)})
    if (part.empty() || part[0] == '.') return false;
  for (char c : user)
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view("._+-=@").find(c) == std::string_view::npos)
      return false;
  return true;
}

VirtualLogin check_virtual_user(const std::string& path, std::string_view user, std::string_view password,
                                bool allow_weak) {
  VirtualLogin login;
  PasswdLookup lookup = find_user(path, user);
  login.warnings = std::move(lookup.warnings);
  using Found = PasswdLookup::Result;
  if (lookup.result != Found::found) {
    if (!lookup.dummy_password.empty()) check_password(lookup.dummy_password, password, true);
    login.result = lookup.result == Found::unknown ? VirtualLogin::Result::rejected : VirtualLogin::Result::unavailable;
    login.why = lookup.result == Found::unknown ? "unknown user" : lookup.error;
    return login;
  }
  std::string where = path + ":" + std::to_string(lookup.entry.line);
  switch (check_password(lookup.entry.password, password, allow_weak)) {
    case Check::match:
      login.result = VirtualLogin::Result::accepted;
      login.entry = std::move(lookup.entry);
      break;
    case Check::mismatch: login.why = "wrong password"; break;
    case Check::weak:
      login.why = where + ": the weak scheme " + scheme_of(lookup.entry.password) +
                  " is refused (see --allow-weak-schemes)";
      break;
    case Check::unsupported:
      login.why = where + ": not a password hash popd knows (scheme " + scheme_of(lookup.entry.password) + ")";
      break;
  }
  return login;
}

}  // namespace popd::auth
