// The client connection on two file descriptors (standard input and output
// under inetd and systemd): reads with the idle timeout, buffered writes
// that give up on a client that stops reading.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "sys/fd.h"
#include "io/ring.h"
#include "io/sender.h"
#include "io/tls.h"
#include "protocol/maildrop.h"

namespace popd::io {

// The peer's address if fd is an internet socket, "local" for a Unix
// socket, else empty.
std::string peer_address(int fd);

// On a TCP socket, sends each write at once (TCP_NODELAY): replies are
// written in whole blocks, and the last segment of a multi-line reply must
// not wait for the client's delayed ACK (40 ms on Linux). Nothing elsewhere.
void send_without_delay(int fd);

class Connection final : public protocol::Output {
 public:
  Connection(int in, int out, std::chrono::seconds idle_timeout);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // TLS handshake as the server, within the idle timeout; from then on all
  // reads and writes go through TLS. Flush before calling.
  bool start_tls(const TlsContext& context, std::string& error);
  bool tls_active() const { return ssl_ != nullptr; }

  enum class ReadResult { data, end, timeout, stopped };
  // Replaces `data` with what the client sent next.
  ReadResult read(std::string& data);

  // The session's side of the TLS relay (privilege separation): from now
  // on replies go into `ring` and the output descriptor carries only
  // wake-ups for the relay; the relay wakes this process through
  // `doorbell` when it has made room, and closes it when it ends.
  void reply_through(Ring ring, sys::UniqueFd doorbell);

  void write(std::string_view bytes) override;
  // Room to write replies in place, waiting for some to be free (empty
  // once the connection has failed). Through the ring, commit() stages
  // what was written there and publishes every params::ring_publish bytes.
  // Plain on a socket, the first call starts a Sender (io/sender.h), and
  // from then on all output goes through it. Otherwise there is none.
  std::span<char> room(std::size_t at_least) override;
  void commit(std::size_t size) override;
  // Writes what is buffered; false once the client is gone or stuck.
  bool flush();
  bool failed() const { return failed_; }

  // Called at least once a minute while the connection waits.
  void on_tick(std::function<void()> tick) { tick_ = std::move(tick); }

  std::string peer_address() const;

  int input_fd() const { return in_; }
  int output_fd() const { return out_; }

  // For a caller that polls itself (the TLS relay): one attempt that never
  // blocks. `bytes` moved; or `end` (closed, reset, TLS error); or neither,
  // and `wait` says what to poll for: POLLIN on input_fd(), POLLOUT on
  // output_fd() (OpenSSL may need either for a read or for a write).
  struct Attempt {
    std::size_t bytes = 0;
    bool end = false;
    short wait = 0;
  };
  Attempt read_some(char* buffer, std::size_t size);
  Attempt write_some(std::string_view data);
  // Makes both descriptors non-blocking, for read_some and write_some.
  void set_nonblocking();
  // For the relay: TLS records collect in a buffer of `size` bytes and go
  // to the socket in large writes when it fills or on flush_some(), not
  // one write per record (params::relay_buffer).
  void buffer_tls_output(std::size_t size);
  // Writes what buffer_tls_output() holds; never blocks. `end` if the
  // client is gone; else `wait` is POLLOUT while bytes remain.
  Attempt flush_some();

  // Ends the connection so that what was sent arrives: flushes, sends TLS
  // close_notify, half-closes a socket and reads what the client still
  // sends for a moment (closing on unread input resets the connection, and
  // the client can lose the last reply). `meanwhile` runs once the client
  // has seen the end, before the wait.
  void close_gracefully(const std::function<void()>& meanwhile = {});

 private:
  // Flushes, sends close_notify and half-closes: true if a socket was.
  bool finish_sending();
  // flush_some() until all is out, within the idle timeout.
  void drain_tls_output();
  void linger();
  // Writes all of `data` unless the client is gone or stuck (failed_).
  void send_all(std::string_view data);
  // The same through the ring or the sender: room(), then commit().
  void write_in_place(std::string_view data);
  // Starts the sender thread, after what is buffered; false where there is
  // none (TLS in this process, not a socket, no thread to be had).
  bool start_sender();
  // Waits for the sender to finish what it has, ticking and heeding
  // termination signals; false once it failed.
  bool wait_for_sender();
  // That, then hands it what was written since.
  bool hand_to_sender();
  // Hands what is staged to the relay, waking it if it sleeps.
  void publish();
  // Sleeps until the relay has made `needed` bytes of room (at most half
  // the ring), within the idle timeout; false on timeout or a termination
  // signal, or when the relay is gone.
  bool wait_for_room(std::size_t needed = 1);
  // Waits for `events` on fd up to the idle timeout; false on timeout or
  // when a termination signal came.
  bool wait(int fd, short events);
  void tick_if_due();
  // One read or write through TLS; false once the connection is over.
  bool tls_read(std::string& data, ReadResult& result);
  ssize_t tls_write(std::string_view data);
  // Waits as OpenSSL asks after a WANT_READ or WANT_WRITE; false if neither.
  bool wait_for_tls(int ssl_error);
  // What an SSL_read or SSL_write that returned `result` must wait for.
  Attempt tls_attempt(int result);

  int in_, out_;
  bool out_is_socket_;
  ssl_st* ssl_ = nullptr;
  std::chrono::seconds idle_timeout_;
  std::string buffer_;
  std::optional<Ring> ring_;
  sys::UniqueFd doorbell_;
  std::unique_ptr<Sender> sender_;
  bool failed_ = false;
  std::function<void()> tick_;
  std::chrono::steady_clock::time_point last_tick_;
};

}  // namespace popd::io
