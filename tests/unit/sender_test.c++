// The plain session's sending thread (io/sender.h), through the Connection
// that uses it, on a real socket pair: every byte arrives, in order, however
// the writes mix; a peer that stops reading makes it fail, not hang.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "io/connection.h"
#include "sys/fd.h"

using popd::io::Connection;
using popd::sys::UniqueFd;

namespace {

struct SocketPair {
  UniqueFd server, client;
};

SocketPair socket_pair() {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

char byte_at(std::size_t i) { return static_cast<char>((i * 131 + i / 4099) % 251); }

}  // namespace

TEST_CASE("sender: 64 MiB in odd pieces, in place and copied, to a slow reader, in order") {
  auto [server, client] = socket_pair();
  constexpr std::size_t total = 64 << 20;
  std::string received;
  std::thread reader([&, fd = client.get()] {
    char buffer[100'000];
    for (std::size_t reads = 0;; ++reads) {
      ssize_t n = ::read(fd, buffer, reads % 7 == 0 ? 1000 : sizeof buffer);
      if (n <= 0) {
        ::shutdown(fd, SHUT_WR);  // the end, as a client answers it: the linger ends
        return;
      }
      received.append(buffer, n);
      if (reads % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  {
    Connection connection(server.get(), server.get(), std::chrono::seconds(10));
    connection.write("+OK before the sender\r\n");
    std::string prefix = "+OK before the sender\r\n";
    std::size_t at = 0;
    for (std::size_t piece = 1; at < total; piece = piece * 7 % 300'007 + 1) {
      std::size_t size = std::min(piece, total - at);
      if (piece % 3 == 0) {  // copied, as a status line is
        std::string bytes(size, '\0');
        for (std::size_t i = 0; i < size; ++i) bytes[i] = byte_at(at + i);
        connection.write(bytes);
      } else {  // in place, as a RETR body is
        auto room = connection.room(std::min<std::size_t>(size, 4096));
        REQUIRE(!room.empty());
        size = std::min(size, room.size());
        for (std::size_t i = 0; i < size; ++i) room[i] = byte_at(at + i);
        connection.commit(size);
      }
      at += size;
      if (piece % 11 == 0) CHECK(connection.flush());
    }
    connection.close_gracefully();
    CHECK(!connection.failed());
  }
  server.reset();
  reader.join();
  REQUIRE(received.size() == std::strlen("+OK before the sender\r\n") + total);
  std::size_t first_wrong = total;
  for (std::size_t i = 0; i < total && first_wrong == total; ++i)
    if (received[std::strlen("+OK before the sender\r\n") + i] != byte_at(i)) first_wrong = i;
  CHECK(first_wrong == total);
}

TEST_CASE("sender: a peer that reads nothing fails the connection after the idle timeout") {
  auto [server, client] = socket_pair();
  Connection connection(server.get(), server.get(), std::chrono::seconds(1));
  auto start = std::chrono::steady_clock::now();
  std::string chunk(1 << 20, 'x');
  for (int i = 0; i < 64 && !connection.failed(); ++i) {
    auto room = connection.room(chunk.size() / 4);
    if (room.empty()) break;
    std::memcpy(room.data(), chunk.data(), room.size());
    connection.commit(room.size());
  }
  CHECK(!connection.flush());
  CHECK(connection.failed());
  auto took = std::chrono::steady_clock::now() - start;
  CHECK(took >= std::chrono::milliseconds(900));
  CHECK(took < std::chrono::seconds(5));
}

TEST_CASE("sender: a peer that is gone fails the connection") {
  auto [server, client] = socket_pair();
  Connection connection(server.get(), server.get(), std::chrono::seconds(10));
  client.reset();
  std::string chunk(1 << 20, 'x');
  for (int i = 0; i < 4 && !connection.failed(); ++i) {
    auto room = connection.room(4096);
    if (room.empty()) break;
    std::size_t size = std::min(room.size(), chunk.size());
    std::memcpy(room.data(), chunk.data(), size);
    connection.commit(size);
    connection.flush();
  }
  connection.close_gracefully();
  CHECK(connection.failed());
}
