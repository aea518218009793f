#include "io/relay.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string_view>
#include <utility>

#include "params.h"

namespace popd::io {
namespace {

using Clock = std::chrono::steady_clock;

// Bytes on their way in one direction, at most params::relay_buffer:
// appended at the back, sent from the front.
class Pipe {
 public:
  std::string_view data() const { return {bytes_.get() + begin_, end_ - begin_}; }
  bool empty() const { return begin_ == end_; }
  // Where new bytes go, and how many fit there: the free space at the
  // back, after moving what waits to the front once that is under half.
  std::pair<char*, std::size_t> space() {
    if (params::relay_buffer - end_ < params::relay_buffer / 2 && begin_ > 0) {
      std::memmove(bytes_.get(), bytes_.get() + begin_, end_ - begin_);
      end_ -= begin_, begin_ = 0;
    }
    return {bytes_.get() + end_, params::relay_buffer - end_};
  }
  // `size` bytes came into space().
  void commit(std::size_t size) { end_ += size; }
  void consume(std::size_t size) {
    begin_ += size;
    if (begin_ == end_) clear();
  }
  void clear() { begin_ = end_ = 0; }

 private:
  std::unique_ptr<char[]> bytes_{new char[params::relay_buffer]};
  std::size_t begin_ = 0, end_ = 0;
};

// Client commands go to the session on its stream socket.
Connection::Attempt session_write(int fd, std::string_view data) {
  ssize_t n = ::send(fd, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n > 0) return {static_cast<std::size_t>(n)};
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return {0, false, POLLOUT};
  return {0, true};
}

// From the session the socket brings only wake-ups, read and dropped;
// true once it has ended (the end of the stream, or an error).
bool session_ended(int fd) {
  char wakeups[256];
  for (;;) {
    ssize_t n = ::recv(fd, wakeups, sizeof wakeups, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
    if (n < 0 && errno == EAGAIN) return false;
  }
}

void wake(int doorbell) {
  while (::send(doorbell, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

}  // namespace

void relay(Connection& client, int session, Ring& replies, int doorbell, std::chrono::seconds idle_timeout) {
  client.set_nonblocking();
  client.buffer_tls_output(params::relay_buffer);
  Pipe to_session;
  bool client_sends = true, session_takes = true, session_sends = true, session_shut = false;
  bool session_readable = true;  // as the last poll said: wake-ups, or the end
  auto last_progress = Clock::now();
  for (;;) {
    bool progress = false;
    short client_in = 0, client_out = 0, session_events = 0;
    // Client to session: read while there is room, write while there is data.
    if (auto [room, size] = to_session.space(); client_sends && size > 0) {
      auto got = client.read_some(room, std::min(size, params::input_block));
      to_session.commit(got.bytes);
      if (got.end) client_sends = false;
      progress |= got.bytes > 0 || got.end;
      (got.wait == POLLIN ? client_in : client_out) |= got.wait;
    }
    if (!to_session.empty() && session_takes) {
      auto put = session_write(session, to_session.data());
      to_session.consume(put.bytes);
      if (put.end) session_takes = false, to_session.clear();  // the session has ended
      progress |= put.bytes > 0 || put.end;
      session_events |= put.wait;
    } else if (!client_sends && !session_shut) {
      // The client said all it will (a piped script): the session answers
      // what it has, then sees the end.
      ::shutdown(session, SHUT_WR);
      session_shut = true;
    }
    // Session to client, out of the ring.
    if (session_sends && std::exchange(session_readable, false) && session_ended(session))
      session_sends = false, progress = true;
    std::string_view replies_waiting = replies.data();
    if (replies.broken()) return;
    if (!replies_waiting.empty()) {
      auto put = client.write_some(replies_waiting);
      if (put.end) return;  // the client is gone
      if (put.bytes > 0 && replies.consume(put.bytes)) wake(doorbell);
      progress |= put.bytes > 0;
      (put.wait == POLLIN ? client_in : client_out) |= put.wait;
    } else {
      // All that came is encrypted: what the TLS output buffer holds goes
      // out now, not when more fills it.
      auto flushed = client.flush_some();
      if (flushed.end) return;
      client_out |= flushed.wait;
      if (!session_sends && !flushed.wait) {
        client.close_gracefully();
        return;
      }
    }
    if (progress) {
      last_progress = Clock::now();
      continue;
    }
    // Nothing moves. While bytes wait for a side that takes none, that side
    // has the idle timeout; otherwise the session decides when to end.
    if (Connection::stop_requested()) return;
    if (session_sends && replies_waiting.empty() && !replies.prepare_to_wait_for_data()) continue;
    auto deadline = Connection::session_end();
    if (deadline != Clock::time_point::max()) deadline += params::relay_grace;
    if (!replies_waiting.empty() || !to_session.empty() || client_out)
      deadline = std::min(deadline, last_progress + idle_timeout);
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return;
    if (session_sends) session_events |= POLLIN;
    // A descriptor nothing waits for is left out: its hang-up would wake
    // the poll again and again.
    pollfd fds[3] = {{client_in ? client.input_fd() : -1, client_in, 0},
                     {client_out ? client.output_fd() : -1, client_out, 0},
                     {session_events ? session : -1, session_events, 0}};
    if (::poll(fds, 3, static_cast<int>(std::min<long long>(left.count(), 60'000))) < 0 && errno != EINTR) return;
    session_readable = fds[2].revents & (POLLIN | POLLHUP | POLLERR);
  }
}

}  // namespace popd::io
