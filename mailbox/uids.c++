#include "mailbox/uids.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <strings.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <cstdio>
#include <new>
#include <utility>

#include "sys/fd.h"
#include "sys/file.h"
#include "params.h"

namespace popd::mailbox {
namespace {

bool starts_with_nocase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && ::strncasecmp(text.data(), prefix.data(), prefix.size()) == 0;
}

// The value of a header line "Name: value" if it is named `name`.
std::optional<std::string_view> value_of(std::string_view line, std::string_view name) {
  if (!starts_with_nocase(line, name) || line.size() == name.size() || line[name.size()] != ':')
    return std::nullopt;
  std::string_view value = line.substr(name.size() + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t' || value.back() == '\r'))
    value.remove_suffix(1);
  return value;
}

// The first word of a value as a number that fits 32 bits.
std::optional<std::uint32_t> leading_number(std::string_view value) {
  std::uint32_t number = 0;
  auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), number);
  if (error != std::errc() || end == value.data() || (end != value.data() + value.size() && *end != ' '))
    return std::nullopt;
  return number;
}

}  // namespace

struct OldId::Md5 {
  EVP_MD_CTX* context = EVP_MD_CTX_new();
  Md5() {
    if (!context || EVP_DigestInit_ex(context, EVP_md5(), nullptr) != 1) throw std::bad_alloc();
  }
  ~Md5() { EVP_MD_CTX_free(context); }
};

std::optional<UidScheme> uid_scheme_named(std::string_view name) {
  if (name == "popd") return UidScheme::popd;
  if (name == "popa3d") return UidScheme::popa3d;
  if (name == "dovecot") return UidScheme::dovecot;
  if (name == "uw-imap") return UidScheme::uw_imap;
  if (name == "x-uidl") return UidScheme::x_uidl;
  if (name == "courier") return UidScheme::courier;
  return std::nullopt;
}

const char* name_of(UidScheme scheme) {
  switch (scheme) {
    case UidScheme::popd: return "popd";
    case UidScheme::popa3d: return "popa3d";
    case UidScheme::dovecot: return "dovecot";
    case UidScheme::uw_imap: return "uw-imap";
    case UidScheme::x_uidl: return "x-uidl";
    case UidScheme::courier: return "courier";
  }
  return "popd";
}

bool needs_validity(UidScheme scheme) { return scheme == UidScheme::dovecot || scheme == UidScheme::uw_imap; }

OldId::OldId(UidScheme scheme) : scheme_(scheme) {
  if (scheme_ == UidScheme::popa3d) md5_ = new Md5;
}

OldId::OldId(OldId&& other) noexcept
    : scheme_(other.scheme_), md5_(std::exchange(other.md5_, nullptr)), fixed_(other.fixed_),
      received_(other.received_), found_(other.found_), key_(other.key_), validity_(other.validity_),
      x_uidl_(std::move(other.x_uidl_)) {}

OldId& OldId::operator=(OldId&& other) noexcept {
  if (this != &other) {
    delete md5_;
    scheme_ = other.scheme_;
    md5_ = std::exchange(other.md5_, nullptr);
    fixed_ = other.fixed_, received_ = other.received_, found_ = other.found_;
    key_ = other.key_;
    validity_ = other.validity_;
    x_uidl_ = std::move(other.x_uidl_);
  }
  return *this;
}

OldId::~OldId() { delete md5_; }

void OldId::start() {
  fixed_ = received_ = found_ = false;
  key_ = 0;
  validity_.reset();
  x_uidl_.clear();
  if (md5_) EVP_DigestInit_ex(md5_->context, EVP_md5(), nullptr);
}

// popa3d hashes, as stored, the header lines that mail readers leave alone:
// the first Received:, any Delivered-To: and X-Delivery-ID:, and Date: and
// Message-ID: while no Received: has come; a continuation line goes with
// the line it continues. The name is matched as a prefix, in any case, but
// X-Delivery-ID: only with a capital X (as popa3d 1.0.3 does).
void OldId::header_piece(std::string_view raw, bool starts_line) {
  if (!md5_) return;
  if (starts_line && !raw.empty()) {
    switch (raw.front()) {
      case ' ':
      case '\t': break;
      case 'R':
      case 'r': fixed_ = !received_ && (received_ = starts_with_nocase(raw, "Received:")); break;
      case 'D':
      case 'd':
        fixed_ = starts_with_nocase(raw, "Delivered-To:") || (!received_ && starts_with_nocase(raw, "Date:"));
        break;
      case 'M':
      case 'm': fixed_ = !received_ && starts_with_nocase(raw, "Message-ID:"); break;
      case 'X': fixed_ = starts_with_nocase(raw, "X-Delivery-ID:"); break;
      default: fixed_ = false;
    }
  }
  if (fixed_) EVP_DigestUpdate(md5_->context, raw.data(), raw.size());
}

void OldId::header_line(std::string_view line) {
  if (needs_validity(scheme_)) {
    if (auto value = value_of(line, "X-UID"); value && !found_) {
      if (auto uid = leading_number(*value); uid && *uid > 0 && value->find(' ') == std::string_view::npos)
        found_ = true, key_ = *uid;
    }
    for (std::string_view name : {"X-IMAPbase", "X-IMAP"})
      if (auto value = value_of(line, name); value && !validity_) validity_ = leading_number(*value);
  }
  if (scheme_ == UidScheme::x_uidl && !found_)
    if (auto value = value_of(line, "X-UIDL"); value && valid_uid(*value)) found_ = true, x_uidl_ = *value;
}

void OldId::finish() {
  if (!md5_) return;
  std::array<unsigned char, EVP_MAX_MD_SIZE> hash{};
  unsigned int length = 0;
  EVP_DigestFinal_ex(md5_->context, hash.data(), &length);
  // popa3d prints the first two 32-bit words of the MD5 state as it keeps
  // them: each word's bytes last to first.
  constexpr int order[8] = {3, 2, 1, 0, 7, 6, 5, 4};
  key_ = 0;
  for (int i : order) key_ = key_ << 8 | hash[i];
  found_ = true;
}

std::string format_old_id(UidScheme scheme, std::uint64_t key, std::uint32_t validity) {
  char id[24] = {};
  switch (scheme) {
    case UidScheme::popa3d: std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(key)); break;
    case UidScheme::dovecot: std::snprintf(id, sizeof id, "%08x%08x", static_cast<unsigned>(key), validity); break;
    case UidScheme::uw_imap: std::snprintf(id, sizeof id, "%08x%08x", validity, static_cast<unsigned>(key)); break;
    default: break;
  }
  return id;
}

std::optional<std::uint32_t> read_validity(const std::string& path, uid_t owner, std::string& refused) {
  sys::OwnFile file = sys::open_own_file(path, O_RDONLY, owner);
  if (!file.refused.empty()) refused = "UIDVALIDITY file " + path + " " + file.refused + "; not read";
  char text[32] = {};
  ssize_t n = file.fd ? ::read(file.fd.get(), text, sizeof text - 1) : -1;
  if (n <= 0 || text[n - 1] != '\n') return std::nullopt;
  std::string_view value(text, n - 1);
  std::uint32_t validity = 0;
  auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), validity);
  if (error != std::errc() || end != value.data() + value.size()) return std::nullopt;
  return validity;
}

bool write_validity(const std::string& path, std::uint32_t validity, std::string& error) {
  std::string refused;
  if (read_validity(path, ::geteuid(), refused) == validity) return true;
  if (sys::replace_file(path, std::to_string(validity) + "\n", true, error)) return true;
  error = "cannot keep the UIDVALIDITY in " + path + ": " + error;
  return false;
}

bool valid_uid(std::string_view id) {
  if (id.empty() || id.size() > params::max_uid_length) return false;
  for (char c : id)
    if (c < 0x21 || c > 0x7e) return false;
  return true;
}

}  // namespace popd::mailbox
