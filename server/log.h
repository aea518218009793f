// syslog: what popd logs and how names from outside appear in it.
#pragma once

#include <string>
#include <string_view>

#include "protocol/engine.h"

namespace popd::server {

// syslog: facility mail, the pid in each line, connected at once (the
// pre-auth process keeps the connection into its chroot).
void open_log();

// A name from outside (a user name a client sent or NSS returned, a path
// made from one) as it goes into a log line: bytes outside printable
// ASCII, and the backslash, as \xNN. So a name is one word without spaces
// that log readers (fail2ban's user=\S*) match whole, and cannot forge a
// line or a field.
std::string escaped(std::string_view name);

// The client's address for a log line: "local" without a network peer.
inline const char* or_local(const std::string& peer) { return peer.empty() ? "local" : peer.c_str(); }

// Free text that may hold such names (a note naming a file): the same, but
// spaces stay.
std::string printable(std::string_view text);

// How a session ended, for the result= of its log line (popd.8, LOGGING).
enum class Ending { quit, timeout, time_limit, closed, signal, tls_failed, lost };

// The one line that ends every session, in a stable key=value form.
void log_session_end(const std::string& user, const std::string& peer, bool tls,
                     const protocol::SessionStats& stats, Ending ending);

}  // namespace popd::server
