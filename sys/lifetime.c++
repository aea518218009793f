#include "sys/lifetime.h"

#include <signal.h>

#include <algorithm>

namespace popd::sys {

using Clock = std::chrono::steady_clock;

namespace {
// When the connection must end: --max-session from its start, and before
// login --login-timeout from its start, whichever comes first.
Clock::time_point connection_deadline = Clock::time_point::max();
Clock::time_point session_deadline = Clock::time_point::max();
volatile sig_atomic_t stop_signal_seen = 0;
void request_stop(int) { stop_signal_seen = 1; }
}  // namespace

void stop_on_termination_signals() {
  struct sigaction action {};
  action.sa_handler = request_stop;  // no SA_RESTART: poll returns EINTR
  sigemptyset(&action.sa_mask);
  for (int signal : {SIGTERM, SIGHUP, SIGINT}) sigaction(signal, &action, nullptr);
}

bool stop_requested() { return stop_signal_seen != 0; }

void limit_session(std::chrono::seconds limit) { session_deadline = connection_deadline = Clock::now() + limit; }

void limit_login(std::chrono::seconds limit) {
  session_deadline = std::min(connection_deadline, Clock::now() + limit);
}

void logged_in() { session_deadline = connection_deadline; }

Clock::time_point connection_end() { return connection_deadline; }

bool session_expired() { return Clock::now() >= session_deadline; }

Clock::time_point session_end() { return session_deadline; }

}  // namespace popd::sys
