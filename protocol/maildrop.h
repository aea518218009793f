// What the protocol engine needs from the world: a maildrop to work on once
// logged in, and an authenticator that checks credentials and opens it. The
// engine makes no system calls; implementations of these interfaces do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace popd::protocol {

// Receives a message as lines of text without line terminators. A long line
// may arrive in several parts; end_line() closes each line.
class MessageSink {
 public:
  virtual void text(std::string_view part) = 0;
  virtual void end_line() = 0;
  // Whole lines at once, starting at a line start, each ending in LF or
  // CRLF as in the mailbox: the same as text() and end_line() for each.
  virtual void lines(std::string_view block) {
    while (!block.empty()) {
      auto newline = block.find('\n');
      std::string_view line = block.substr(0, newline);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      text(line);
      end_line();
      block.remove_prefix(newline + 1);
    }
  }

 protected:
  ~MessageSink() = default;
};

// A locked maildrop. Messages are numbered 0..count()-1 here; the engine
// presents them to the client as 1..count().
class Maildrop {
 public:
  virtual ~Maildrop() = default;
  virtual std::size_t count() const = 0;
  // Octets the message occupies on the wire with CRLF line endings, before
  // byte-stuffing: what RETR sends and what the client stores.
  virtual std::uint64_t size(std::size_t index) const = 0;
  virtual std::string uid(std::size_t index) const = 0;
  // Appends the unique-id to `out`: a UIDL listing of many messages builds
  // each line without a string of its own.
  virtual void append_uid(std::size_t index, std::string& out) const { out += uid(index); }
  // Whether message `index` is still where the maildrop says, checked
  // before a reply about it begins; false ends the session with
  // [SYS/TEMP] (the maildrop has dropped what misled it).
  virtual bool verify(std::size_t) { return true; }
  // Sends the whole message, or with body_lines, its header, the empty line
  // and that many lines of the body. false: it could not be read in full,
  // the reply is broken and the session must end.
  virtual bool send(std::size_t index, std::optional<std::uint64_t> body_lines,
                    MessageSink& sink) = 0;
  // QUIT's UPDATE state, called whether or not any message is marked:
  // removes the messages marked true, durably; then the maildrop holds
  // only the others (numbered anew). On failure `error` says why: nothing
  // changed, or the deletions may have taken effect and the next session
  // completes them.
  virtual bool commit(const std::vector<bool>& deleted, std::string& error) = 0;
};

struct Login {
  enum class Outcome {
    accepted,     // maildrop is set; the session enters TRANSACTION
    rejected,     // unknown user, wrong password, or an account that may not
                  // log in (expired, locked, root): [AUTH], counts as a failure
    forbidden,    // not allowed here (policy, mailbox permissions): [SYS/PERM]
    in_use,       // maildrop locked by another session: [IN-USE]
    too_soon,     // sooner after the last login than --login-delay: [LOGIN-DELAY]
    temporary,    // server-side trouble that may pass: [SYS/TEMP]
    handed_off,   // another process answers from here on (privilege separation)
  };
  Outcome outcome = Outcome::rejected;
  std::string text;             // human-readable detail for the reply
  Maildrop* maildrop = nullptr; // set when accepted
  bool close = false;           // the connection cannot go on after this

  // Toward the limit of failed logins: a refusal, and trouble in
  // authentication that the client could otherwise retry without end.
  bool counts_as_failure() const {
    return outcome == Outcome::rejected || (outcome == Outcome::temporary && !close);
  }
};

class Authenticator {
 public:
  virtual Login login(std::string_view user, std::string_view password) = 0;

 protected:
  ~Authenticator() = default;
};

// Where replies go. The engine writes whole replies; the caller buffers and
// decides when to flush.
class Output {
 public:
  virtual void write(std::string_view bytes) = 0;
  // For a writer that would fill a buffer of its own and write() it: room
  // of at least `at_least` bytes to write in place, then commit() what was
  // written there. Empty if this output has none to lend (use write()).
  virtual std::span<char> room(std::size_t /*at_least*/) { return {}; }
  virtual void commit(std::size_t /*size*/) {}

 protected:
  ~Output() = default;
};

}  // namespace popd::protocol
