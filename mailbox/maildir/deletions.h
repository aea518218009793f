// QUIT's deletions in a Maildir, all or nothing across a crash: the names
// are recorded durably in a journal first (the --journal file, outside the
// Maildir), then unlinked, then the directories synced, then the journal
// removed. A session that finds the journal completes it before it lists
// the Maildir. A message renamed meanwhile (a flag set by a mail reader:
// the same base name, other flags) is deleted under its new name; one
// already gone counts as deleted.
#pragma once

#include <string>
#include <vector>

#include "mailbox/maildir/listing.h"

namespace popd::mailbox::maildir {

// Deletes the messages of `listing` marked in `doomed`. false: `error`
// says why; the journal, if it was made, completes the deletions at the
// next session.
bool delete_messages(int maildir_fd, const Listing& listing, const std::vector<bool>& doomed,
                     const std::string& journal, std::string& error);

struct Recovered {
  bool ok = true;       // false: the Maildir must not be used now (`note` says why)
  std::string note;     // what was done, for syslog; empty if nothing
};
// Completes the deletions a journal at `journal` records for the Maildir
// open at `maildir_fd`.
Recovered complete_deletions(int maildir_fd, const std::string& journal);

}  // namespace popd::mailbox::maildir
