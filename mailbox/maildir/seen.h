// --maildir-mark-seen: at QUIT, the messages RETR sent move to cur/ with
// the S (seen) flag, as Dovecot does, so that a mail reader of the same
// Maildir shows them read. A flag is not mail: a message renamed
// meanwhile, or one whose new name is taken, keeps the name it has, and
// no rename is synced. On NFS, which has no RENAME_NOREPLACE, a link and
// an unlink do it, the way Maildir readers move messages there.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailbox/maildir/listing.h"

namespace popd::mailbox::maildir {

// The name in cur/ of a message that was read: its flags with S among
// them, in ASCII order as the Maildir specification asks. nullopt: it is
// there already, or its name has flags of another kind (":1,").
std::optional<std::string> seen_name(Folder folder, std::string_view name);

// Renames each message of `listing` marked in `read`. The listing keeps
// the old names: what follows QUIT (the sizes file) uses base names only.
void mark_seen(int maildir_fd, const Listing& listing, const std::vector<bool>& read);

}  // namespace popd::mailbox::maildir
