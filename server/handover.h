// Every message between popd's processes (DESIGN, "Processes"), as OpenBSD
// daemons keep their imsg types: one enum of tags, and the functions that
// encode and check each message. Three channels:
//
//   monitor channel  pre-auth <-> monitor, SOCK_SEQPACKET, one message each:
//                    a login request (user NUL password), its reply
//                    (outcome, close flag, text; with handed_off the
//                    socket to the session rides along), and at the end
//                    of a connection that never logged in, an end report.
//                    With --trace-dir, the transcript so far before each
//                    request and the end report (server/trace.h).
//   hand-over        pre-auth -> session, a stream socket the monitor made
//                    for them: a header (mode, mechanism, the length of the
//                    input the client pipelined after its login), that
//                    input, and with the header two descriptors: in direct
//                    mode the client's, in relay mode the reply ring and
//                    the doorbell (io/relay.h).
//   lock channel     session <-> monitor, SOCK_SEQPACKET: the session asks
//                    for the dotlock; the monitor answers with one tag and,
//                    for a refusal, the reply's text.
//
// Nothing received is trusted: a pre-auth process may be an attacker's.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/maildrop.h"
#include "server/log.h"
#include "sys/fd.h"

namespace popd::server::handover {

enum class Tag : char {
  end_report = '\x01',  // monitor channel: no user name starts with it
  trace = '\x02',       // ... nor with this
  direct = 'D',         // hand-over: the client's own descriptors
  relay = 'R',          // hand-over: TLS stays with the pre-auth process
  lock = 'L',           // lock channel: take the dotlock for me
  lock_held = 'H',      // ... taken here, held for the session
  lock_none = 'N',      // ... none taken here: the session locks itself
  lock_busy = 'B',      // ... another session holds the mailbox
  lock_failed = 'F',    // ... could not be taken
};

// The login's mechanism, for the session's log line.
enum class Mechanism : char { user = 'U', sasl_plain = 'P', sasl_login = 'L' };

// One message, with up to two descriptors (SCM_RIGHTS); false if it did
// not go whole. Retries EINTR until a termination signal came.
bool send(int channel, std::string_view data, std::span<const int> fds = {});
// One message of up to `size` bytes (without: the largest there is, a
// login request); nullopt when the other side is gone or the message was
// cut. Passed descriptors land in `fds`, or are closed if it is null.
std::optional<std::string> receive(int channel, std::vector<sys::UniqueFd>* fds = nullptr);
std::optional<std::string> receive(int channel, std::vector<sys::UniqueFd>* fds, std::size_t size);

// --- the monitor channel
struct LoginRequest {
  std::string user;      // unchecked; all of the message without a NUL
  std::string password;
  bool complete = false;  // the NUL between them was there
};
std::string encode_login_request(std::string_view user, std::string_view password);
LoginRequest decode_login_request(std::string_view message);

std::string encode_reply(const protocol::Login& login);
// The outcome, close flag and text; nullopt for anything else.
std::optional<protocol::Login> decode_reply(std::string_view message);

bool is_end_report(std::string_view message);
std::string encode_end_report(Ending ending, bool tls);
struct EndReport {
  Ending ending = Ending::lost;
  bool tls = false;
};
// A report that does not check out reads as a lost connection.
EndReport decode_end_report(std::string_view message);

// The pre-auth process's transcript, redacted (not trusted: it is only
// written to a trace file).
std::string encode_trace(std::string_view transcript);
bool is_trace(std::string_view message);
std::string_view trace_of(std::string_view message);

// --- the hand-over
struct Header {
  bool direct = false;
  Mechanism mechanism = Mechanism::user;
  std::uint32_t pending = 0;  // bytes of input that follow
};
constexpr std::size_t header_size = 2 + sizeof(std::uint32_t);
// The header and the pending input, as one message.
std::string encode_handover(bool direct, Mechanism mechanism, std::string_view pending);
// nullopt for an unknown mode or mechanism, or more input than
// params::max_handover.
std::optional<Header> decode_header(std::string_view header);
const char* mechanism_name(Mechanism mechanism);
Mechanism mechanism_of(std::string_view name);

// --- the lock channel
std::string encode_lock_request();
std::string encode_lock_answer(Tag answer, std::string_view text = {});
bool is_lock_request(std::string_view message);
struct LockAnswer {
  Tag tag;
  std::string text;
};
std::optional<LockAnswer> decode_lock_answer(std::string_view message);

}  // namespace popd::server::handover
