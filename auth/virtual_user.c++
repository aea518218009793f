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

namespace {

// For a domain that has no file: SHA-512 crypt of "x", as cheap as the
// cheapest strong hash a file is likely to hold.
constexpr std::string_view fixed_dummy =
    "{SHA512-CRYPT}$6$popddummysalt$wMVbG1xpF.LgFQZTbm3CnAG//5jmcs4TQ005jklUM8Doj8jmlWmKiIyoIz95B0PhU6tCwLXH8M2xjiUs2T6vH/";

}  // namespace

VirtualLogin check_virtual_user(const std::string& path, bool per_domain, std::string_view user,
                                std::string_view password, bool allow_weak) {
  VirtualLogin login;
  PasswdLookup lookup = find_user(path, user);
  login.warnings = std::move(lookup.warnings);
  auto dummy = [&] {
    check_password(lookup.dummy_password.empty() ? fixed_dummy : std::string_view(lookup.dummy_password), password,
                   true);
  };
  using Found = PasswdLookup::Result;
  if (lookup.result != Found::found) {
    dummy();
    bool unknown = lookup.result == Found::unknown || (per_domain && lookup.missing);
    login.result = unknown ? VirtualLogin::Result::rejected : VirtualLogin::Result::unavailable;
    login.why = lookup.result == Found::unknown && lookup.error.empty() ? "unknown user" : lookup.error;
    return login;
  }
  std::string where = path + ":" + std::to_string(lookup.entry.line);
  Check check = check_password(lookup.entry.password, password, allow_weak);
  if (check != Check::match && check != Check::mismatch) dummy();  // no hash was computed
  switch (check) {
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
    case Check::too_costly:
      login.why = where + ": the hash's cost parameters are unreadable or beyond popd's bounds (params.h)";
      break;
  }
  return login;
}

}  // namespace popd::auth
