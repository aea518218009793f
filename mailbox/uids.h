// Unique-ids in the form another server gave them (--uidl-scheme): after a
// switch to popd, clients that leave mail on the server must not fetch it
// again, nor skip new mail. See popd.8, UNIQUE-IDS.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace popd::mailbox {

enum class UidScheme {
  popd,     // popd's own: digest of the From_ line, header and size
  popa3d,   // popa3d 1.0: MD5 of the header lines that stay put, 16 hex digits
  dovecot,  // Dovecot's default %08Xu%08Xv (lower-case hex): X-UID, then UIDVALIDITY
  uw_imap,  // UW ipop3d: %08lx%08lx of the UIDVALIDITY and X-UID
  x_uidl,   // the X-UIDL header qpopper and GNU Mailutils write
  courier,  // Maildir only: Courier's pop3d, from its courierpop3dsizelist
};

std::optional<UidScheme> uid_scheme_named(std::string_view name);
// The name --uidl-scheme gives it.
const char* name_of(UidScheme scheme);
// Whether an id of this scheme needs the mailbox's UIDVALIDITY.
bool needs_validity(UidScheme scheme);

// What one message's header says for a scheme. The parser hands it every
// header line as stored (line end included, metadata headers too).
class OldId {
 public:
  explicit OldId(UidScheme scheme);
  OldId(OldId&&) noexcept;
  OldId& operator=(OldId&&) noexcept;
  ~OldId();

  // A new message's header begins.
  void start();
  // A piece of a header line; `starts_line` for the first piece of each.
  void header_piece(std::string_view raw, bool starts_line);
  // A whole header line, without its line end.
  void header_line(std::string_view line);
  // The header is over.
  void finish();

  // Whether the header had what the scheme needs; then its key: the
  // popa3d hash, or the X-UID (for x-uidl: 0, the value is text()).
  bool found() const { return found_; }
  std::uint64_t key() const { return key_; }
  std::string_view text() const { return x_uidl_; }
  // The UIDVALIDITY an X-IMAPbase or X-IMAP header of this message gave.
  std::optional<std::uint32_t> validity() const { return validity_; }

 private:
  struct Md5;
  UidScheme scheme_;
  Md5* md5_ = nullptr;  // popa3d only
  bool fixed_ = false, received_ = false, found_ = false;
  std::uint64_t key_ = 0;
  std::optional<std::uint32_t> validity_;
  std::string x_uidl_;
};

// The id of a scheme from a message's key (and the mailbox's UIDVALIDITY).
std::string format_old_id(UidScheme scheme, std::uint64_t key, std::uint32_t validity);

// Whether a value is a unique-id RFC 1939 allows: 1 to 70 of 0x21..0x7E.
bool valid_uid(std::string_view id);

// The dovecot and uw-imap ids need the UIDVALIDITY, which only the first
// message's X-IMAPbase header holds: when popd deletes that message, it
// keeps the value in a file of the user's (--uidvalidity), written and
// synced before the commit. A file there that is not `owner`'s own (see
// sys::open_own_file) is not read: `refused` says why.
std::optional<std::uint32_t> read_validity(const std::string& path, uid_t owner, std::string& refused);
bool write_validity(const std::string& path, std::uint32_t validity, std::string& error);

}  // namespace popd::mailbox
