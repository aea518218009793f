// A password against the password field of a passwd-file entry, in the
// schemes Dovecot writes: "{SHA512-CRYPT}$6$...", "{ARGON2ID}$argon2id$...",
// a bare crypt(3) string (Dovecot's default scheme, CRYPT), ... The
// hashing is libxcrypt's crypt_rn() and libargon2's, never popd's own.
// Weak schemes (plain text, unsalted or fast digests, DES and MD5 crypt)
// are refused unless the administrator allows them.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace popd::auth {

enum class Check {
  match,
  mismatch,
  weak,         // a weak scheme, refused without --allow-weak-schemes
  unsupported,  // a scheme popd does not know, or a field that is not a hash of it
  too_costly,   // a hash whose cost parameters exceed params.h's bounds
};

// Compares in constant time; the hash costs what its parameters say.
Check check_password(std::string_view field, std::string_view password, bool allow_weak);

// The scheme a field names, upper case, without an encoding suffix
// (".HEX", ".B64"): "SHA512-CRYPT"; "CRYPT" for a bare crypt(3) string.
std::string scheme_of(std::string_view field);

// popd --hash-password: the field for `password` in `scheme` (CRYPT,
// meaning libxcrypt's preferred method, yescrypt on Debian 12;
// SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, ARGON2I, ARGON2ID), with a fresh
// salt. nullopt: not a scheme popd makes, or hashing failed.
std::optional<std::string> hash_password(std::string_view password, std::string_view scheme);

}  // namespace popd::auth
