// The unique-ids another server gave a Maildir's messages, from the list
// it keeps in the Maildir (--uidl-scheme): Dovecot's dovecot-uidlist (its
// UID and UIDVALIDITY as its default pop3_uidl_format %08Xu%08Xv, or the
// POP3 UIDL it saved), Courier's courierpop3dsizelist ("UID<n>-<uidv>").
// Read only: popd never writes these files.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "mailbox/maildir/listing.h"
#include "mailbox/uids.h"

namespace popd::mailbox::maildir {

// Gives the messages of `listing` the ids the scheme's list names them by
// (an id two messages would share, only the first), and puts those first,
// in that server's order. Nothing where there is no list.
void adopt_old_ids(int maildir_fd, UidScheme scheme, Listing& listing);

// Each (base name, id, the server's order) a list's text names.
using IdSink = std::function<void(std::string_view base, std::string id, std::uint64_t order)>;
void each_dovecot_id(std::string_view text, const IdSink& sink);
void each_courier_id(std::string_view text, const IdSink& sink);

}  // namespace popd::mailbox::maildir
