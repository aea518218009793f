// The unique-ids another server gave a Maildir's messages, from the list
// it keeps in the Maildir (--uidl-scheme): Dovecot's dovecot-uidlist (its
// UID and UIDVALIDITY as its default pop3_uidl_format %08Xu%08Xv, or the
// POP3 UIDL it saved), Courier's courierpop3dsizelist ("UID<n>-<uidv>").
// Read only: popd never writes these files.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "mailbox/uids.h"

namespace popd::mailbox::maildir {

struct KnownId {
  std::string id;
  std::uint64_t order = 0;  // the server's order (Dovecot's UID)
};

// By base name. Empty where there is no list, or it cannot be read.
using KnownIds = std::map<std::string, KnownId, std::less<>>;

KnownIds read_old_ids(int maildir_fd, UidScheme scheme);

// The lists' lines, for tests.
KnownIds parse_dovecot_uidlist(std::string_view text);
KnownIds parse_courier_sizelist(std::string_view text);

}  // namespace popd::mailbox::maildir
