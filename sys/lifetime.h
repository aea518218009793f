// How long this process (and the children it forks) may serve its
// connection, and whether a termination signal asked it to stop. Process-
// wide because every wait shares them: the connection's reads and writes,
// the sender thread, the TLS relay and the monitor's waits for its children.
#pragma once

#include <chrono>

namespace popd::sys {

// Makes SIGTERM, SIGHUP and SIGINT end the waiting (read gives `stopped`,
// a blocked write fails), so that the session ends through its normal
// path and releases its locks.
void stop_on_termination_signals();
// A termination signal has come.
bool stop_requested();

// Every connection of this process and its children ends `limit` from
// now: waits give up then as on the idle timeout.
void limit_session(std::chrono::seconds limit);
// Until logged_in(), every connection ends `limit` from now, if that is
// sooner: an unauthenticated client may not keep its processes (and a
// spawner's instance) for the whole session limit.
void limit_login(std::chrono::seconds limit);
void logged_in();
// When --max-session ends the connection, login or not.
std::chrono::steady_clock::time_point connection_end();
bool session_expired();
// When the session must end (time_point::max() without a limit).
std::chrono::steady_clock::time_point session_end();

}  // namespace popd::sys
