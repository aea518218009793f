// The TLS relay of privilege separation: after login the pre-authentication
// process keeps the TLS state and copies plaintext between the client and
// the session process, in both directions at once.
#pragma once

#include <chrono>

#include "io/connection.h"
#include "io/ring.h"

namespace popd::io {

// Relays until the session has ended and all it sent has reached the
// client, or the client is gone. Never blocks one direction on the other:
// non-blocking descriptors, one poll over both sides, bounded buffers.
// Client commands go to the session on its socket; replies come out of
// `replies` (the session wakes this process with a byte on its socket and
// ends it by closing that), and `doorbell` wakes the session when room is
// made. Gives up on a client that takes no data for `idle_timeout`; the
// session enforces the idle and total time limits itself and ends, and its
// last reply is passed on.
void relay(Connection& client, int session, Ring& replies, int doorbell, std::chrono::seconds idle_timeout);

}  // namespace popd::io
