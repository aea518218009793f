// A second thread that writes a plain session's replies to the client's
// socket: while it sends one buffer, the session reads and converts the
// next messages into the other, on the other core. (With TLS the relay
// process does this part.) Only a session that sends message bodies
// starts one (io/connection.c++).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <span>
#include <thread>

#include "sys/fd.h"
#include "params.h"

namespace popd::io {

class Sender {
 public:
  // Sends on `socket` (non-blocking sends), giving up on a client that
  // takes nothing for `idle_timeout` or past the session's end.
  Sender(int socket, std::chrono::seconds idle_timeout);
  // Stops the thread at once: what it has not sent yet is dropped.
  ~Sender();
  Sender(const Sender&) = delete;
  Sender& operator=(const Sender&) = delete;

  // The free part of the buffer being filled, and what is in it.
  std::span<char> room() { return {filling_.get() + filled_, capacity - filled_}; }
  void commit(std::size_t size) { filled_ += size; }
  std::size_t filled() const { return filled_; }

  enum class State { idle, busy, failed };
  // Waits up to `limit` for the thread to finish what it was given.
  State wait(std::chrono::milliseconds limit);
  // Gives the thread what was filled and goes on in the other buffer.
  // Only when wait() says idle.
  void hand_over();

  static constexpr std::size_t capacity = params::sender_buffer;

 private:
  void run();
  // Writes all of `data`; false if the client is gone or stuck, or on stop.
  bool send_all(const char* data, std::size_t size);

  int socket_;
  std::chrono::seconds idle_timeout_;
  sys::UniqueFd stop_;  // an eventfd: readable once the thread must stop
  std::unique_ptr<char[]> filling_, sending_;
  std::size_t filled_ = 0;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::size_t to_send_ = 0;  // bytes of sending_ the thread has yet to send
  bool failed_ = false, stopping_ = false;
  std::thread thread_;  // last: started once the rest is in place
};

}  // namespace popd::io
