// The mbox format: finding messages in a spool and presenting them as the
// client sees them. Reads through a ByteSource, so it is tested on strings
// and used on files; memory grows with the number of messages, not their size.
#pragma once

#include <array>
#include <cerrno>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "mailbox/message_memory.h"
#include "mailbox/uids.h"
#include "mailbox/mbox/source.h"
#include "params.h"
#include "protocol/maildrop.h"

namespace popd::mailbox {

struct NotMbox : std::runtime_error {
  using std::runtime_error::runtime_error;
};


struct Message {
  std::uint64_t record_offset = 0;   // its "From " separator line
  std::uint64_t content_offset = 0;  // first byte after that line
  std::uint64_t content_length = 0;  // the message, without the separator
  std::uint64_t size = 0;            // octets sent: CRLF, metadata headers hidden
  std::array<unsigned char, 16> digest{};
  std::uint64_t from_hash = 0;  // of its From_ line (from_line_hash), for the index
  // What --uidl-scheme takes from the header (mailbox/uids.h): the key, or
  // for x-uidl where Mbox::x_uidls holds the value (offset << 8 | length).
  std::uint64_t old_key = 0;
  bool old_found = false;
  bool old_used = false;  // the id is the scheme's (worked out with the numbering)
  // Earlier messages in the mbox with the same id: the same digest, or the
  // same old id where the scheme gives one.
  std::uint32_t duplicate = 0;

  // popd's own id.
  std::string uid() const;
  void append_uid(std::string& out) const;
};

// A deque: it grows in blocks, never by copying all it holds, so a parse
// peaks at the memory it keeps; the blocks come populated (message_memory.h).
using Messages = std::deque<Message, MessageAllocator<Message>>;

struct Mbox {
  // What the client sees, in file order.
  Messages messages;
  // The UW IMAP "FOLDER INTERNAL DATA" pseudo-message, hidden and never deleted.
  std::optional<Message> internal;
  std::uint64_t end = 0;  // bytes parsed: the file size when it was read
  UidScheme scheme = UidScheme::popd;
  std::optional<std::uint32_t> validity;  // the UIDVALIDITY of X-IMAPbase or X-IMAP
  std::string x_uidls;                    // X-UIDL values, for the x-uidl scheme

  // Where the record of messages[i] ends: the next record or the end.
  std::uint64_t record_end(std::size_t index) const;
  // The unique-id of messages[i] in this scheme.
  std::string uid(std::size_t index) const;
  void append_uid(std::size_t index, std::string& out) const;
  // Whether messages[i] has an id of the scheme, not popd's own.
  bool has_old_id(std::size_t index) const;
  // Numbers the messages that would have the same id (parse() does).
  void renumber();
  // Becomes what parse() finds in the file once the messages marked true
  // are removed from it (mailbox/commit.h).
  void remove(const std::vector<bool>& deleted);
};

// Identifies a From_ line for the index: a hash of its first
// params::index_from_bytes bytes, its line end included if it is shorter.
std::uint64_t from_line_hash(std::string_view line);

// Throws NotMbox when the data does not start with a "From " line. From
// `parallel_from` bytes on, both halves are parsed at once (two threads).
Mbox parse(ByteSource& source, UidScheme scheme = UidScheme::popd,
           std::uint64_t parallel_from = params::parallel_parse);

// The same as parse(), given `known`: what parse() found in the first
// known.end bytes of this data (mailbox/index.h). Only what follows is read,
// and the last known record again.
Mbox parse_after(ByteSource& source, Mbox known, std::uint64_t parallel_from = params::parallel_parse);


// Sends a message as the client sees it (see protocol::Maildrop::send),
// reading it from `source` (into `buffer`), or from `content`: its bytes,
// already in memory. false: the source ended before the message (the file
// shrank); what was sent is not all of it.
bool send(ByteSource& source, const Message& message, std::optional<std::uint64_t> body_lines,
          protocol::MessageSink& sink, ReadBuffer& buffer);
void send(std::string_view content, const Message& message, std::optional<std::uint64_t> body_lines,
          protocol::MessageSink& sink);

}  // namespace popd::mailbox
