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
#include "sys/lifetime.h"

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

// One relay: its buffers and what each side has done; run() until the end.
class Relay {
 public:
  Relay(Connection& client, int session, Ring& replies, int doorbell, std::chrono::seconds idle_timeout)
      : client_(client), session_(session), replies_(replies), doorbell_(doorbell), idle_timeout_(idle_timeout) {}

  void run() {
    client_.set_nonblocking();
    client_.buffer_tls_output(params::relay_buffer);
    for (auto last_progress = Clock::now();;) {
      client_in_ = client_out_ = session_events_ = 0;
      bool progress = commands_to_session();
      switch (replies_to_client()) {
        case Step::done: return;
        case Step::moved: progress = true; break;
        case Step::stuck: break;
      }
      if (progress)
        last_progress = Clock::now();
      else if (!wait(last_progress))
        return;
    }
  }

 private:
  enum class Step { stuck, moved, done };

  // Client to session: read while there is room, write while there is
  // data. true if anything moved.
  bool commands_to_session() {
    bool progress = false;
    if (auto [room, size] = to_session_.space(); client_sends_ && size > 0) {
      auto got = client_.read_some(room, std::min(size, params::input_block));
      to_session_.commit(got.bytes);
      if (got.end) client_sends_ = false;
      progress |= got.bytes > 0 || got.end;
      (got.wait == POLLIN ? client_in_ : client_out_) |= got.wait;
    }
    if (!to_session_.empty() && session_takes_) {
      auto put = session_write(session_, to_session_.data());
      to_session_.consume(put.bytes);
      if (put.end) session_takes_ = false, to_session_.clear();  // the session has ended
      progress |= put.bytes > 0 || put.end;
      session_events_ |= put.wait;
    } else if (!client_sends_ && !session_shut_) {
      // The client said all it will (a piped script): the session answers
      // what it has, then sees the end.
      ::shutdown(session_, SHUT_WR);
      session_shut_ = true;
    }
    return progress;
  }

  // Session to client, out of the ring; done once the session has ended
  // and all it sent is out, or the client is gone.
  Step replies_to_client() {
    bool ended = session_sends_ && std::exchange(session_readable_, false) && session_ended(session_);
    if (ended) session_sends_ = false;
    std::string_view waiting = replies_.data();
    replies_pending_ = !waiting.empty();
    if (replies_.broken()) return Step::done;
    if (replies_pending_) {
      auto put = client_.write_some(waiting);
      if (put.end) return Step::done;  // the client is gone
      if (put.bytes > 0 && replies_.consume(put.bytes)) wake(doorbell_);
      (put.wait == POLLIN ? client_in_ : client_out_) |= put.wait;
      return put.bytes > 0 || ended ? Step::moved : Step::stuck;
    }
    // All that came is encrypted: what the TLS output buffer holds goes
    // out now, not when more fills it.
    auto flushed = client_.flush_some();
    if (flushed.end) return Step::done;
    client_out_ |= flushed.wait;
    if (!session_sends_ && !flushed.wait) {
      client_.close_gracefully();
      return Step::done;
    }
    return ended ? Step::moved : Step::stuck;
  }

  // Nothing moves: sleeps until a side can. While bytes wait for a side
  // that takes none, that side has the idle timeout; otherwise the session
  // decides when to end. false: give up.
  bool wait(Clock::time_point last_progress) {
    if (sys::stop_requested()) return false;
    if (session_sends_ && !replies_pending_ && !replies_.prepare_to_wait_for_data()) return true;  // it came
    auto deadline = sys::session_end();
    if (deadline != Clock::time_point::max()) deadline += params::relay_grace;
    if (replies_pending_ || !to_session_.empty() || client_out_)
      deadline = std::min(deadline, last_progress + idle_timeout_);
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    if (session_sends_) session_events_ |= POLLIN;
    // A descriptor nothing waits for is left out: its hang-up would wake
    // the poll again and again.
    pollfd fds[3] = {{client_in_ ? client_.input_fd() : -1, client_in_, 0},
                     {client_out_ ? client_.output_fd() : -1, client_out_, 0},
                     {session_events_ ? session_ : -1, session_events_, 0}};
    if (::poll(fds, 3, static_cast<int>(std::min<long long>(left.count(), 60'000))) < 0 && errno != EINTR)
      return false;
    session_readable_ = fds[2].revents & (POLLIN | POLLHUP | POLLERR);
    return true;
  }

  Connection& client_;
  int session_;
  Ring& replies_;
  int doorbell_;
  std::chrono::seconds idle_timeout_;
  Pipe to_session_;
  bool client_sends_ = true, session_takes_ = true, session_sends_ = true, session_shut_ = false;
  bool session_readable_ = true;  // as the last poll said: wake-ups, or the end
  bool replies_pending_ = false;
  // What the last round waits for.
  short client_in_ = 0, client_out_ = 0, session_events_ = 0;
};

}  // namespace

void relay(Connection& client, int session, Ring& replies, int doorbell, std::chrono::seconds idle_timeout) {
  Relay(client, session, replies, doorbell, idle_timeout).run();
}

}  // namespace popd::io
