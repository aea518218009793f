// One Maildir message file as the client sees it: its lines with CRLF ends,
// exactly as stored otherwise (a Maildir has no separators to unquote and
// no metadata headers to hide).
#pragma once

#include <cstdint>
#include <optional>

#include "protocol/maildrop.h"

namespace popd::mailbox::maildir {

// The octets RETR sends for the file open at `fd`, before byte-stuffing:
// each line with CRLF. A last line without LF is sent with the CRLF the
// terminating line needs before it, not counted: Dovecot's size, which it
// writes as ,W= into the names of the files it delivers. nullopt: a read
// failed (errno set).
std::optional<std::uint64_t> wire_size(int fd);

// Sends the file open at `fd` (see protocol::Maildrop::send). false: a read
// failed; what was sent is not all of it.
bool send_message(int fd, std::optional<std::uint64_t> body_lines, protocol::MessageSink& sink);

}  // namespace popd::mailbox::maildir
