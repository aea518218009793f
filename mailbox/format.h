// Which format a --mailbox template names: an mbox spool or a Maildir.
#pragma once

#include <string>

#include "mailbox/uids.h"

namespace popd::mailbox {

enum class Format { automatic, mbox, maildir };

// Strips a "maildir:" or "mbox:" prefix from a --mailbox template and says
// which it was. Without one, a template ending in '/' is a Maildir (the
// convention of Postfix's home_mailbox and procmail), else automatic.
Format take_format(std::string& path_template);

// The format of the mailbox at `path`: `given` unless automatic; then a
// directory with cur/ and new/ is a Maildir, and a file, or nothing, an
// mbox spool.
Format format_at(Format given, const std::string& path);

// Whether --uidl-scheme has ids for the format: popd, dovecot and courier
// for a Maildir; all but courier for an mbox spool.
bool scheme_fits(Format format, UidScheme scheme);

}  // namespace popd::mailbox
