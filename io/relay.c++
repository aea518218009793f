#include "io/relay.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <string>

#include "params.h"

namespace popd::io {
namespace {

using Clock = std::chrono::steady_clock;

// Bytes on their way in one direction: appended at the back, sent from
// the front.
class Pipe {
 public:
  std::string_view data() const { return std::string_view(bytes_).substr(sent_); }
  bool empty() const { return sent_ == bytes_.size(); }
  std::size_t room() const { return params::relay_buffer - (bytes_.size() - sent_); }
  // A place for up to `size` new bytes; commit() says how many came.
  char* reserve(std::size_t size) {
    if (sent_ == bytes_.size()) bytes_.clear(), sent_ = 0;
    reserved_ = bytes_.size();
    bytes_.resize(reserved_ + size);
    return bytes_.data() + reserved_;
  }
  void commit(std::size_t size) { bytes_.resize(reserved_ + size); }
  void consume(std::size_t size) {
    sent_ += size;
    if (sent_ > params::relay_buffer) bytes_.erase(0, sent_), sent_ = 0;
  }
  void clear() { bytes_.clear(), sent_ = 0; }

 private:
  std::string bytes_;
  std::size_t sent_ = 0, reserved_ = 0;
};

// The session side is a plain stream socket.
Connection::Attempt session_read(int fd, char* buffer, std::size_t size) {
  ssize_t n = ::recv(fd, buffer, size, MSG_DONTWAIT);
  if (n > 0) return {static_cast<std::size_t>(n)};
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return {0, false, POLLIN};
  return {0, true};
}

Connection::Attempt session_write(int fd, std::string_view data) {
  ssize_t n = ::send(fd, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n > 0) return {static_cast<std::size_t>(n)};
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return {0, false, POLLOUT};
  return {0, true};
}

}  // namespace

void relay(Connection& client, int session, std::chrono::seconds idle_timeout) {
  client.set_nonblocking();
  Pipe to_session, to_client;
  bool client_sends = true, session_takes = true, session_sends = true, session_shut = false;
  auto last_progress = Clock::now();
  for (;;) {
    bool progress = false;
    short client_in = 0, client_out = 0, session_events = 0;
    // Each direction: read while there is room, write while there is data.
    if (client_sends && to_session.room() > 0) {
      std::size_t room = std::min(to_session.room(), params::input_block);
      auto got = client.read_some(to_session.reserve(room), room);
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
    if (session_sends && to_client.room() > 0) {
      std::size_t room = std::min(to_client.room(), params::output_buffer);
      auto got = session_read(session, to_client.reserve(room), room);
      to_client.commit(got.bytes);
      if (got.end) session_sends = false;
      progress |= got.bytes > 0 || got.end;
      session_events |= got.wait;
    }
    if (!to_client.empty()) {
      auto put = client.write_some(to_client.data());
      if (put.end) return;  // the client is gone
      to_client.consume(put.bytes);
      progress |= put.bytes > 0;
      (put.wait == POLLIN ? client_in : client_out) |= put.wait;
    }
    if (!session_sends && to_client.empty()) {
      client.close_gracefully();
      return;
    }
    if (progress) {
      last_progress = Clock::now();
      continue;
    }
    // Nothing moves. While bytes wait for a side that takes none, that side
    // has the idle timeout; otherwise the session decides when to end.
    if (Connection::stop_requested()) return;
    auto deadline = Connection::session_end();
    if (deadline != Clock::time_point::max()) deadline += params::relay_grace;
    if (!to_client.empty() || !to_session.empty()) deadline = std::min(deadline, last_progress + idle_timeout);
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return;
    // A descriptor nothing waits for is left out: its hang-up would wake
    // the poll again and again.
    pollfd fds[3] = {{client_in ? client.input_fd() : -1, client_in, 0},
                     {client_out ? client.output_fd() : -1, client_out, 0},
                     {session_events ? session : -1, session_events, 0}};
    if (::poll(fds, 3, static_cast<int>(std::min<long long>(left.count(), 60'000))) < 0 && errno != EINTR) return;
  }
}

}  // namespace popd::io
