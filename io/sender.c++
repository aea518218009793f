#include "io/sender.h"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <stdexcept>
#include <utility>

#include "sys/lifetime.h"

namespace popd::io {

using Clock = std::chrono::steady_clock;

Sender::Sender(int socket, std::chrono::seconds idle_timeout)
    : socket_(socket),
      idle_timeout_(idle_timeout),
      stop_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      filling_(new char[capacity]),  // not zeroed: only what is committed is sent
      sending_(new char[capacity]) {
  if (!stop_) throw std::runtime_error("eventfd failed");
  // Termination signals go to the session's thread, whose waits they end
  // (sys::stop_on_termination_signals): blocked here before the
  // thread starts, so that it inherits the mask, then restored.
  sigset_t termination, saved;
  sigemptyset(&termination);
  for (int signal : {SIGTERM, SIGHUP, SIGINT, SIGALRM, SIGPIPE}) sigaddset(&termination, signal);
  pthread_sigmask(SIG_BLOCK, &termination, &saved);
  try {
    thread_ = std::thread([this] { run(); });
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &saved, nullptr);
    throw;  // no thread to be had: the caller does without
  }
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
}

Sender::~Sender() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(stop_.get(), &one, sizeof one);  // ends a wait in send_all
  changed_.notify_all();
  thread_.join();
}

Sender::State Sender::wait(std::chrono::milliseconds limit) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, limit, [this] { return to_send_ == 0 || failed_; });
  return failed_ ? State::failed : to_send_ == 0 ? State::idle : State::busy;
}

void Sender::hand_over() {
  if (filled_ == 0) return;
  {
    std::lock_guard lock(mutex_);
    std::swap(filling_, sending_);
    to_send_ = std::exchange(filled_, 0);
  }
  changed_.notify_all();
}

void Sender::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return to_send_ > 0 || stopping_; });
    if (stopping_) return;
    const char* data = sending_.get();
    std::size_t size = to_send_;
    lock.unlock();
    bool sent = send_all(data, size);
    lock.lock();
    to_send_ = 0;
    failed_ = !sent;
    changed_.notify_all();
    if (failed_) return;
  }
}

bool Sender::send_all(const char* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = ::send(socket_, data, size, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) {
      data += n, size -= n;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
    // The client takes nothing now: wait for it as Connection::wait does,
    // or for the session to stop this thread.
    auto deadline = std::min(Clock::now() + idle_timeout_, sys::session_end());
    for (;;) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      pollfd fds[2] = {{socket_, POLLOUT, 0}, {stop_.get(), POLLIN, 0}};
      int ready = ::poll(fds, 2, static_cast<int>(std::min<long long>(left.count(), 60'000)));
      if (ready < 0 && errno != EINTR) return false;
      if (fds[1].revents) return false;
      if (ready > 0) break;
    }
  }
  return true;
}

}  // namespace popd::io
