#include "auth/password.h"

#include <argon2.h>
#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <memory>

#include "params.h"
#include "protocol/base64.h"

namespace popd::auth {
namespace {

struct Field {
  std::string scheme;        // "SHA512-CRYPT"
  std::string encoding;      // "HEX", "B64" or empty: the scheme's own
  std::string_view encoded;  // after the braces
};

Field split(std::string_view field) {
  Field split{"CRYPT", "", field};
  if (!field.starts_with('{') || field.find('}') == std::string_view::npos) return split;
  std::string name(field.substr(1, field.find('}') - 1));
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::toupper(c); });
  split.encoded = field.substr(field.find('}') + 1);
  if (auto dot = name.rfind('.'); dot != std::string::npos) {
    split.encoding = name.substr(dot + 1);
    name.resize(dot);
  }
  split.scheme = name;
  return split;
}

bool equal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// crypt(3) strings: DES, MD5, SHA-256, SHA-512, bcrypt, yescrypt, ... as
// libxcrypt knows them. Its legacy methods are weak here, but for SHA-256
// crypt: Debian's libxcrypt counts it legacy, yet it is SHA-512 crypt's
// construction (salted, 5,000 rounds and more) and Dovecot writes it.
Check check_crypt(std::string_view hash, std::string_view password, bool allow_weak) {
  std::string setting(hash);
  int strength = crypt_checksalt(setting.c_str());
  if (strength != CRYPT_SALT_OK && strength != CRYPT_SALT_METHOD_LEGACY) return Check::unsupported;
  if (strength == CRYPT_SALT_METHOD_LEGACY && !hash.starts_with("$5$") && !allow_weak) return Check::weak;
  auto data = std::make_unique<crypt_data>();
  std::string phrase(password);
  const char* out = crypt_rn(phrase.c_str(), setting.c_str(), data.get(), sizeof *data);
  // A field crypt(3) reads only as a setting ("$6$salt") is not a hash:
  // its output, whatever the password, is longer.
  bool failed = !out || out[0] == '*' || std::string_view(out).size() != hash.size();
  bool same = !failed && equal(out, hash);
  OPENSSL_cleanse(data.get(), sizeof *data);
  OPENSSL_cleanse(phrase.data(), phrase.size());
  return failed ? Check::unsupported : same ? Check::match : Check::mismatch;
}

// "$argon2id$v=19$m=65536,t=3,p=1$SALT$HASH", as Dovecot (libsodium)
// writes it. The memory it asks for is bounded: the monitor pays it.
Check check_argon2(std::string_view encoded, std::string_view password, argon2_type type) {
  std::size_t m = encoded.find("$m=");
  std::uint64_t kib = 0;
  if (m == std::string_view::npos ||
      std::from_chars(encoded.data() + m + 3, encoded.data() + encoded.size(), kib).ec != std::errc() ||
      kib > params::max_argon2_kib)
    return Check::unsupported;
  std::string text(encoded);
  switch (argon2_verify(text.c_str(), password.data(), password.size(), type)) {
    case ARGON2_OK: return Check::match;
    case ARGON2_VERIFY_MISMATCH: return Check::mismatch;
    default: return Check::unsupported;
  }
}

std::optional<std::string> from_hex(std::string_view hex) {
  if (hex.size() % 2) return std::nullopt;
  std::string bytes(hex.size() / 2, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    unsigned value = 0;
    if (std::from_chars(hex.data() + 2 * i, hex.data() + 2 * i + 2, value, 16).ptr != hex.data() + 2 * i + 2)
      return std::nullopt;
    bytes[i] = static_cast<char>(value);
  }
  return bytes;
}

// Dovecot's digest schemes, all weak: SHA, SHA256, SHA512, PLAIN-MD5,
// LDAP-MD5, and with an S before them, salted (the salt stored after the
// digest). nullptr: not one of them.
const EVP_MD* digest_of(const Field& field) {
  std::string_view name = field.scheme;
  if (name.starts_with("SSHA")) name.remove_prefix(1);
  if (name == "SHA") return EVP_sha1();
  if (name == "SHA256") return EVP_sha256();
  if (name == "SHA512") return EVP_sha512();
  if (name == "PLAIN-MD5" || name == "LDAP-MD5") return EVP_md5();
  return nullptr;
}

Check check_digest(const Field& field, std::string_view password) {
  const EVP_MD* md = digest_of(field);
  bool salted = field.scheme.starts_with("SSHA");
  // Base64, but PLAIN-MD5's is hex; a ".HEX" or ".B64" after the name says otherwise.
  bool hex = field.encoding == "HEX" || (field.encoding.empty() && field.scheme == "PLAIN-MD5");
  auto stored = hex ? from_hex(field.encoded) : protocol::decode_base64(field.encoded);
  std::size_t size = static_cast<std::size_t>(EVP_MD_get_size(md));
  if (!stored || stored->size() < size || (!salted && stored->size() != size)) return Check::unsupported;
  std::string input = std::string(password) + stored->substr(size);
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest;
  unsigned length = 0;
  bool hashed = EVP_Digest(input.data(), input.size(), digest.data(), &length, md, nullptr) == 1;
  OPENSSL_cleanse(input.data(), input.size());
  if (!hashed) return Check::unsupported;
  return equal({reinterpret_cast<const char*>(digest.data()), length}, std::string_view(*stored).substr(0, size))
             ? Check::match
             : Check::mismatch;
}

}  // namespace

std::string scheme_of(std::string_view field) { return split(field).scheme; }

Check check_password(std::string_view field, std::string_view password, bool allow_weak) {
  // crypt(3) ends a password at NUL: "secret\0anything" must not pass for "secret".
  if (password.find('\0') != std::string_view::npos) return Check::mismatch;
  Field f = split(field);
  if (f.scheme == "ARGON2I" || f.scheme == "ARGON2ID")
    return check_argon2(f.encoded, password, f.scheme == "ARGON2I" ? Argon2_i : Argon2_id);
  if (f.scheme == "CRYPT" || f.scheme == "SHA512-CRYPT" || f.scheme == "SHA256-CRYPT" || f.scheme == "BLF-CRYPT" ||
      f.scheme == "MD5-CRYPT" || f.scheme == "MD5" || f.scheme == "DES-CRYPT")
    return f.encoded.empty() ? Check::unsupported : check_crypt(f.encoded, password, allow_weak);
  bool plain = f.scheme == "PLAIN" || f.scheme == "CLEARTEXT";
  if (!plain && !digest_of(f)) return Check::unsupported;  // CRAM-MD5, NTLM, SCRAM-*, PBKDF2, ...
  if (!allow_weak) return Check::weak;
  if (plain) return equal(f.encoded, password) ? Check::match : Check::mismatch;
  return check_digest(f, password);
}

std::optional<std::string> hash_password(std::string_view password, std::string_view scheme) {
  std::string name(scheme);
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::toupper(c); });
  if (name == "ARGON2I" || name == "ARGON2ID") {
    std::array<unsigned char, 16> salt;
    if (RAND_bytes(salt.data(), salt.size()) != 1) return std::nullopt;
    argon2_type type = name == "ARGON2I" ? Argon2_i : Argon2_id;
    std::string encoded(argon2_encodedlen(params::argon2_passes, params::argon2_kib, 1, salt.size(), 32, type), '\0');
    if (argon2_hash(params::argon2_passes, params::argon2_kib, 1, password.data(), password.size(), salt.data(),
                    salt.size(), nullptr, 32, encoded.data(), encoded.size(), type, ARGON2_VERSION_13) != ARGON2_OK)
      return std::nullopt;
    encoded.resize(encoded.find('\0'));
    return "{" + name + "}" + encoded;
  }
  const char* prefix = name == "CRYPT"          ? nullptr
                       : name == "SHA512-CRYPT" ? "$6$"
                       : name == "SHA256-CRYPT" ? "$5$"
                       : name == "BLF-CRYPT"    ? "$2y$"
                                                : "";
  if (prefix && !*prefix) return std::nullopt;
  if (password.find('\0') != std::string_view::npos) return std::nullopt;
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  if (!crypt_gensalt_rn(prefix, 0, nullptr, 0, setting, sizeof setting)) return std::nullopt;
  auto data = std::make_unique<crypt_data>();
  std::string phrase(password);
  const char* out = crypt_rn(phrase.c_str(), setting, data.get(), sizeof *data);
  std::optional<std::string> field;
  if (out && out[0] != '*') field = "{" + name + "}" + out;
  OPENSSL_cleanse(data.get(), sizeof *data);
  OPENSSL_cleanse(phrase.data(), phrase.size());
  return field;
}

}  // namespace popd::auth
