#include "io/connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fcntl.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "io/proxy.h"
#include "params.h"
#include "sys/lifetime.h"

namespace popd::io {

using Clock = std::chrono::steady_clock;
constexpr auto tick_interval = std::chrono::seconds(60);


void send_without_delay(int fd) {
  int on = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);  // fails harmlessly on a pipe or a Unix socket
}

Connection::Connection(int in, int out, std::chrono::seconds idle_timeout)
    : in_(in), out_(out), idle_timeout_(idle_timeout), last_tick_(Clock::now()) {
  struct stat st;
  bool known = ::fstat(out, &st) == 0;
  out_is_socket_ = known && S_ISSOCK(st.st_mode);
  // A pipe's reader may stop reading too: writes to it wait in poll, with
  // the idle timeout, not in write (sockets get MSG_DONTWAIT instead).
  if (known && S_ISFIFO(st.st_mode)) ::fcntl(out, F_SETFL, ::fcntl(out, F_GETFL) | O_NONBLOCK);
  buffer_.reserve(params::output_buffer);
}

void Connection::tick_if_due() {
  if (tick_ && Clock::now() - last_tick_ >= tick_interval) {
    last_tick_ = Clock::now();
    tick_();
  }
}

bool Connection::wait(int fd, short events) {
  auto deadline = std::min(Clock::now() + idle_timeout_, sys::session_end());
  for (;;) {
    // Checked before polling too: a client that never pauses still ends.
    if (sys::stop_requested() || sys::session_expired()) return false;
    tick_if_due();
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<std::chrono::milliseconds>(left, tick_interval).count()));
    if (n > 0) return true;  // ready, or an error the next call will report
    if (n < 0 && errno != EINTR) return true;
  }
}

Connection::~Connection() {
  if (!ssl_) return;
  if (!failed_) SSL_shutdown(ssl_);  // best effort close_notify; never waits
  SSL_free(ssl_);
}

bool Connection::start_tls(const TlsContext& context, std::string& error) {
  // On a socket, TLS runs non-blocking so that poll() enforces the timeout.
  if (out_is_socket_) {
    ::fcntl(in_, F_SETFL, ::fcntl(in_, F_GETFL) | O_NONBLOCK);
    ::fcntl(out_, F_SETFL, ::fcntl(out_, F_GETFL) | O_NONBLOCK);
  }
  ssl_ = SSL_new(context.get());
  if (!ssl_ || SSL_set_rfd(ssl_, in_) != 1 || SSL_set_wfd(ssl_, out_) != 1) {
    error = tls_errors();
    failed_ = true;
    return false;
  }
  for (;;) {
    int result = SSL_accept(ssl_);
    if (result == 1) return true;
    int ssl_error = SSL_get_error(ssl_, result);
    if (!wait_for_tls(ssl_error)) {
      error = ssl_error == SSL_ERROR_WANT_READ || ssl_error == SSL_ERROR_WANT_WRITE
                  ? "TLS handshake timed out"
                  : "TLS handshake failed: " + tls_errors();
      failed_ = true;
      return false;
    }
  }
}

void Connection::set_nonblocking() {
  for (int fd : {in_, out_}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

void Connection::buffer_tls_output(std::size_t size) {
  if (!ssl_) return;
  BIO* socket = SSL_get_wbio(ssl_);
  BIO* buffer = BIO_new(BIO_f_buffer());
  if (!buffer || BIO_set_write_buffer_size(buffer, static_cast<long>(size)) != 1 || BIO_up_ref(socket) != 1) {
    BIO_free(buffer);
    return;  // records go out one write each, as before
  }
  SSL_set0_wbio(ssl_, BIO_push(buffer, socket));  // drops SSL's reference to `socket`, the chain keeps one
}

Connection::Attempt Connection::flush_some() {
  if (!ssl_ || failed_) return {0, failed_};
  BIO* out = SSL_get_wbio(ssl_);
  if (BIO_wpending(out) == 0) return {};
  if (BIO_flush(out) > 0) return {};
  if (BIO_should_retry(out)) return {0, false, POLLOUT};
  failed_ = true;
  return {0, true};
}

void Connection::drain_tls_output() {
  for (;;) {
    Attempt flushed = flush_some();
    if (!flushed.wait || !wait(out_, POLLOUT)) return;
  }
}

Connection::Attempt Connection::tls_attempt(int result) {
  if (result > 0) return {static_cast<std::size_t>(result)};
  switch (SSL_get_error(ssl_, result)) {
    case SSL_ERROR_WANT_READ: return {0, false, POLLIN};
    case SSL_ERROR_WANT_WRITE: return {0, false, POLLOUT};
    case SSL_ERROR_ZERO_RETURN: return {0, true};  // close_notify: it may still read our replies
    default: failed_ = true; return {0, true};      // a reset or a TLS error: nothing more goes out
  }
}

Connection::Attempt Connection::read_some(char* buffer, std::size_t size) {
  if (ssl_) return tls_attempt(SSL_read(ssl_, buffer, static_cast<int>(std::min<std::size_t>(size, 1 << 30))));
  ssize_t n = ::read(in_, buffer, size);
  if (n > 0) return {static_cast<std::size_t>(n)};
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return {0, false, POLLIN};
  return {0, true};
}

Connection::Attempt Connection::write_some(std::string_view data) {
  if (failed_) return {0, true};
  // The retry after a WANT_WRITE repeats at least the bytes of the attempt
  // before: the caller only ever appends to what it passes.
  if (ssl_) return tls_attempt(SSL_write(ssl_, data.data(), static_cast<int>(std::min<std::size_t>(data.size(), 1 << 30))));
  ssize_t n = ::write(out_, data.data(), data.size());
  if (n > 0) return {static_cast<std::size_t>(n)};
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return {0, false, POLLOUT};
  failed_ = true;
  return {0, true};
}

void Connection::close_gracefully(const std::function<void()>& meanwhile) {
  bool half_closed = finish_sending();
  if (meanwhile) meanwhile();
  if (half_closed) linger();
}

bool Connection::finish_sending() {
  bool sent = flush() && (!sender_ || wait_for_sender());
  sender_.reset();  // the thread ends here: what follows may fork
  if (!sent) return false;
  if (ssl_) {
    // close_notify, not waiting for the client's: it may never send one.
    drain_tls_output();
    int result = SSL_shutdown(ssl_);
    if (result < 0 && SSL_get_error(ssl_, result) == SSL_ERROR_WANT_WRITE && wait(out_, POLLOUT))
      SSL_shutdown(ssl_);
    drain_tls_output();  // OpenSSL does not wait for a buffer to take the alert
    failed_ = true;      // nothing more goes out, not even from the destructor
  }
  return out_is_socket_ && ::shutdown(out_, SHUT_WR) == 0;
}

void Connection::linger() {
  // The client's FIN normally follows our reply at once; wait no longer
  // than params::linger for it, discarding what comes before it.
  auto deadline = Clock::now() + params::linger;
  char discard[4096];
  for (;;) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd p{in_, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return;
    ssize_t n = ::recv(in_, discard, sizeof discard, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return;
  }
}

// OpenSSL may need to write in order to read (a renegotiation, a key
// update) and to read in order to write: wait for what it asked for.
bool Connection::wait_for_tls(int ssl_error) {
  if (ssl_error == SSL_ERROR_WANT_READ) return wait(in_, POLLIN);
  if (ssl_error == SSL_ERROR_WANT_WRITE) return wait(out_, POLLOUT);
  return false;
}

bool Connection::tls_read(std::string& data, ReadResult& result) {
  for (;;) {
    int n = SSL_read(ssl_, data.data(), static_cast<int>(data.size()));
    if (n > 0) {
      data.resize(n);
      result = ReadResult::data;
      return true;
    }
    int ssl_error = SSL_get_error(ssl_, n);
    if (ssl_error == SSL_ERROR_WANT_READ || ssl_error == SSL_ERROR_WANT_WRITE) {
      if (wait_for_tls(ssl_error)) continue;
      result = sys::stop_requested() ? ReadResult::stopped : ReadResult::timeout;
    } else {
      result = ReadResult::end;  // close_notify, a reset, or a TLS error
    }
    data.clear();
    return false;
  }
}

ssize_t Connection::tls_write(std::string_view data) {
  for (;;) {
    int n = SSL_write(ssl_, data.data(), static_cast<int>(data.size()));
    if (n > 0) return n;
    if (!wait_for_tls(SSL_get_error(ssl_, n))) return -1;
  }
}

// Waits in poll, never in read: the wait is what enforces the idle timeout,
// the session's deadline and termination signals, and the tick that keeps
// the mailbox's lock fresh. EAGAIN is possible: a spawner may hand over a
// non-blocking socket, and TLS sets one.
Connection::ReadResult Connection::read(std::string& data) {
  data.resize(params::input_block);
  if (ssl_) {
    ReadResult result;
    tls_read(data, result);
    return result;
  }
  for (;;) {
    if (!wait(in_, POLLIN)) {
      data.clear();
      return sys::stop_requested() ? ReadResult::stopped : ReadResult::timeout;
    }
    ssize_t n = ::read(in_, data.data(), data.size());
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      data.clear();
      return ReadResult::end;
    }
    data.resize(n);
    return ReadResult::data;
  }
}

void Connection::reply_through(Ring ring, sys::UniqueFd doorbell) {
  ring_.emplace(std::move(ring));
  doorbell_ = std::move(doorbell);
}

void Connection::write_in_place(std::string_view data) {
  while (!data.empty()) {
    std::span<char> space = room(1);
    if (space.empty()) return;  // failed
    std::size_t size = std::min(space.size(), data.size());
    std::memcpy(space.data(), data.data(), size);
    commit(size);
    data.remove_prefix(size);
  }
}

void Connection::publish() {
  if (!ring_->publish()) return;
  // The relay sleeps: one byte wakes it (if its socket is full, one that
  // wakes it is there already).
  ssize_t n;
  while ((n = ::send(out_, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) failed_ = true;
}

std::span<char> Connection::room(std::size_t at_least) {
  if (!ring_) {
    if (at_least > Sender::capacity || !start_sender()) return {};
    if (sender_->room().size() < at_least && !hand_to_sender()) return {};
    return sender_->room();
  }
  if (at_least > params::ring_size / 2) return {};
  while (!failed_) {
    std::span<char> room = ring_->room();
    if (room.size() >= at_least) return room;
    if (!wait_for_room(at_least)) failed_ = true;
  }
  return {};
}

void Connection::commit(std::size_t size) {
  if (!ring_) return sender_->commit(size);  // handed over when full, or at a flush
  ring_->stage(size);
  if (ring_->staged() >= params::ring_publish) publish();
}

bool Connection::start_sender() {
  if (sender_) return !failed_;
  if (failed_ || ssl_ || !out_is_socket_) return false;
  send_all(buffer_);
  buffer_.clear();
  if (failed_) return false;
  try {
    sender_ = std::make_unique<Sender>(out_, idle_timeout_);
  } catch (const std::exception&) {
    return false;  // no thread: the replies go out from this one, as before
  }
  return true;
}

bool Connection::wait_for_sender() {
  while (!failed_) {
    switch (sender_->wait(std::chrono::milliseconds(100))) {
      case Sender::State::idle: return true;
      case Sender::State::failed: failed_ = true; break;
      case Sender::State::busy:
        if (sys::stop_requested()) failed_ = true;
        tick_if_due();
        break;
    }
  }
  return false;
}

bool Connection::hand_to_sender() {
  if (!wait_for_sender()) return false;
  sender_->hand_over();
  return true;
}

bool Connection::wait_for_room(std::size_t needed) {
  publish();  // the relay may be waiting for what is staged
  if (failed_ || ring_->broken()) return false;
  if (!ring_->prepare_to_wait_for_room(needed)) return !ring_->broken();
  if (!wait(doorbell_.get(), POLLIN)) return false;
  char wakeups[64];
  ssize_t n = ::recv(doorbell_.get(), wakeups, sizeof wakeups, MSG_DONTWAIT);
  return n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR));  // 0: the relay has ended
}

void Connection::write(std::string_view bytes) {
  if (failed_) return;
  if (ring_ || sender_) return write_in_place(bytes);
  if (bytes.size() < params::direct_write && buffer_.size() + bytes.size() < params::output_buffer) {
    buffer_.append(bytes);
    return;
  }
  // A large write (a RETR body): what is buffered goes first, then these
  // bytes straight from the caller, not copied into the buffer.
  if (flush()) send_all(bytes);
}

bool Connection::flush() {
  if (ring_) {
    if (!failed_) publish();
    return !failed_;
  }
  if (sender_) return !failed_ && (sender_->filled() == 0 || hand_to_sender());
  send_all(buffer_);
  buffer_.clear();
  return !failed_;
}

void Connection::send_all(std::string_view pending) {
  while (!failed_ && !pending.empty()) {
    // On a socket, never block in write: a client that stops reading must
    // not hold the session (and the mailbox lock) beyond the idle timeout.
    if (ssl_) {
      ssize_t n = tls_write(pending.substr(0, 1 << 30));
      if (n < 0) failed_ = true;
      else pending.remove_prefix(n);
      continue;
    }
    ssize_t n = out_is_socket_ ? ::send(out_, pending.data(), pending.size(), MSG_DONTWAIT | MSG_NOSIGNAL)
                               : ::write(out_, pending.data(), pending.size());
    if (n >= 0) {
      pending.remove_prefix(n);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait(out_, POLLOUT)) failed_ = true;
    } else if (errno != EINTR) {
      failed_ = true;
    }
  }
}

std::string Connection::peer_address() const { return io::peer_address(in_); }

std::string peer_address(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return {};
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET)
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&address)->sin_addr, text, sizeof text);
  else if (address.ss_family == AF_INET6)
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&address)->sin6_addr, text, sizeof text);
  else if (address.ss_family == AF_UNIX)
    return "local";
  return canonical_address(text);  // a dual-stack socket's IPv4 clients as IPv4
}

}  // namespace popd::io
