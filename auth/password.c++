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

// The digits of crypt(3) strings' numbers: "./0-9A-Za-z"; -1 for others.
int itoa64_value(char c) {
  if (c >= '.' && c <= '9') return c - '.';
  if (c >= 'A' && c <= 'Z') return c - 'A' + 12;
  if (c >= 'a' && c <= 'z') return c - 'a' + 38;
  return -1;
}

// A number of yescrypt's parameters, taken from the front of `text`:
// its first digit says how many follow (digits 0-47 stand alone, 48-55
// take one more, ...), and `min` is added, as libxcrypt encodes them.
std::optional<std::uint64_t> take_yescrypt_number(std::string_view& text, std::uint64_t min) {
  if (text.empty() || itoa64_value(text[0]) < 0) return std::nullopt;
  std::uint64_t first = static_cast<std::uint64_t>(itoa64_value(text[0])), start = 0, end = 47, value = min;
  unsigned more = 0;
  while (first > end) {
    value += (end + 1 - start) << (6 * more);
    start = end + 1;
    end = start + (62 - end) / 2;
    ++more;
  }
  if (text.size() < 1 + more) return std::nullopt;
  value += (first - start) << (6 * more);
  for (unsigned i = 1; i <= more; ++i) {
    if (itoa64_value(text[i]) < 0) return std::nullopt;
    value += static_cast<std::uint64_t>(itoa64_value(text[i])) << (6 * (more - i));
  }
  text.remove_prefix(1 + more);
  return value;
}

// Whether a memory-hard hash stays within params.h's bounds: `memory`
// bytes, worked through `passes` times in a row, in `lanes` threads.
bool affordable_memory_hard(std::uint64_t memory, std::uint64_t passes, std::uint64_t lanes) {
  return memory <= params::max_hash_memory && passes >= 1 && passes <= params::max_hash_passes && lanes >= 1 &&
         lanes <= params::max_hash_lanes && memory * passes <= params::max_hash_work;
}

// yescrypt's parameters ("$y$j9T$..."; "$gy$" alike), read as libxcrypt's
// yescrypt_r reads them (yescrypt-common.c): flavor, log2 N, r, then
// optionally which of p, t, g and NROM follow. 128 r N bytes, worked
// t + 1 times; in the scrypt and WORM flavors (below YESCRYPT_RW, 2) p
// times more, while YESCRYPT_RW splits N among its p threads. libxcrypt
// refuses g and NROM itself.
bool affordable_yescrypt(std::string_view params) {
  auto flavor = take_yescrypt_number(params, 0), n_log2 = take_yescrypt_number(params, 1),
       r = take_yescrypt_number(params, 1);
  if (!flavor || !n_log2 || !r || *n_log2 > 30 || *r > params::max_hash_memory / 128) return false;
  std::uint64_t p = 1, t = 0;
  if (!params.empty() && params[0] != '$') {
    auto have = take_yescrypt_number(params, 1);
    if (!have || *have > 15) return false;
    if (*have & 1) {
      auto taken = take_yescrypt_number(params, 2);
      if (!taken || *taken > params::max_hash_lanes) return false;
      p = *taken;
    }
    if (*have & 2) {
      auto taken = take_yescrypt_number(params, 1);
      if (!taken || *taken >= params::max_hash_passes) return false;
      t = *taken;
    }
  }
  std::uint64_t memory = 128 * *r << *n_log2;
  return affordable_memory_hard(memory, (t + 1) * (*flavor < 2 ? p : 1), p);
}

// scrypt, "$7$": log2 N in one digit, then r and p in five each, least
// significant first. 128 r N bytes, worked p times.
bool affordable_scrypt(std::string_view params) {
  if (params.size() < 11) return false;
  std::uint64_t r = 0, p = 0;
  for (int i = 0; i < 5; ++i) {
    if (itoa64_value(params[1 + i]) < 0 || itoa64_value(params[6 + i]) < 0) return false;
    r |= static_cast<std::uint64_t>(itoa64_value(params[1 + i])) << (6 * i);
    p |= static_cast<std::uint64_t>(itoa64_value(params[6 + i])) << (6 * i);
  }
  int n_log2 = itoa64_value(params[0]);
  if (n_log2 < 1 || n_log2 > 30 || r == 0 || r > params::max_hash_memory / 128) return false;
  return affordable_memory_hard(128 * r << n_log2, p, p);
}

// Whether a crypt(3) string's cost stays within params.h's bounds: the
// monitor checks it, as root, at every login of its user. Methods whose
// cost is fixed pass, and those whose cost popd reads here within the
// bounds; any other (NetBSD's $sha1$ and Sun's $md5 with their rounds,
// methods of later libxcrypts) is refused rather than left to cost what
// it says.
bool affordable_crypt(std::string_view hash) {
  auto number = [](std::string_view digits) {
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    return ec == std::errc() ? value : UINT64_MAX;
  };
  if (hash.size() > 4 && hash.starts_with("$2") && hash[3] == '$')  // bcrypt: "$2b$12$"
    return number(hash.substr(4, 2)) <= params::max_bcrypt_cost;
  if (hash.starts_with("$5$rounds=") || hash.starts_with("$6$rounds="))
    return number(hash.substr(10, hash.find('$', 10) - 10)) <= params::max_sha_crypt_rounds;
  if (hash.starts_with("$y$")) return affordable_yescrypt(hash.substr(3));
  if (hash.starts_with("$gy$")) return affordable_yescrypt(hash.substr(4));
  if (hash.starts_with("$7$")) return affordable_scrypt(hash.substr(3));
  // Fixed costs: SHA-256/512 crypt's 5,000 rounds, MD5 crypt, Sun MD5
  // without rounds, NT hash, and DES (traditional, bigcrypt, and BSDi's
  // "_", at most 2^24 rounds: 3.75 s here).
  for (std::string_view fixed : {"$5$", "$6$", "$1$", "$md5$", "$3$"})
    if (hash.starts_with(fixed)) return true;
  return !hash.starts_with('$');
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
  if (!affordable_crypt(hash)) return Check::too_costly;
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
// writes it. The memory, passes and lanes it asks for are bounded: the
// monitor pays them.
Check check_argon2(std::string_view encoded, std::string_view password, argon2_type type) {
  std::size_t at = encoded.find("$m=");
  if (at == std::string_view::npos) return Check::unsupported;
  const char* end = encoded.data() + encoded.size();
  std::uint64_t kib = 0, passes = 0, lanes = 0;
  auto [after_m, m_error] = std::from_chars(encoded.data() + at + 3, end, kib);
  if (m_error != std::errc() || !std::string_view(after_m, end).starts_with(",t=")) return Check::unsupported;
  auto [after_t, t_error] = std::from_chars(after_m + 3, end, passes);
  if (t_error != std::errc() || !std::string_view(after_t, end).starts_with(",p=")) return Check::unsupported;
  if (std::from_chars(after_t + 3, end, lanes).ec != std::errc()) return Check::unsupported;
  if (kib > params::max_hash_memory / 1024 || !affordable_memory_hard(kib * 1024, passes, lanes))
    return Check::too_costly;
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
  // check_password never matches a password with NUL: neither may a field.
  if (password.find('\0') != std::string_view::npos) return std::nullopt;
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
