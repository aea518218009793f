// What popd can tell an administrator without serving anyone and without
// changing anything: no PAM, no lock that would hold up a delivery, no
// index or record written.
#pragma once

#include <cstddef>
#include <string>

#include "mailbox/format.h"
#include "options.h"

namespace popd::server {

// popd --list-uids MAILBOX: each message's number and unique-id, as UIDL
// would list them, on standard output.
int list_uids(const Options& options);

// "N ID" lines of the mailbox at `path` (its format `format`), at most
// `limit`; false with `error` if it cannot be read.
bool unique_ids(const Options& options, std::string path, mailbox::Format format, std::size_t limit,
                std::string& out, std::string& error);

// popd --explain USER: what a login of USER would do, on standard output:
// the account and where it comes from, the mailbox (path, format, owner,
// mode), its lock, journal and index files, the unique-id scheme and the
// first ids, the per-user records, and what would refuse the login.
int explain(const Options& options);

}  // namespace popd::server
