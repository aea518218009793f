// --max-per-ip's slots: lock files per client address.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include "server/per_ip.h"
#include "tests/unit/files.h"

using namespace popd::server;
using namespace popd::testing;

TEST_CASE("per-ip slots: N for an address, the next refused; others' addresses apart; a slot ended is free") {
  TempDir dir;
  std::string slots = dir.path + "/per-ip", error;
  std::vector<ConnectionSlot> held;
  for (int i = 0; i < 3; ++i) {
    auto slot = take_connection_slot(slots, "192.0.2.1", 3, error);
    REQUIRE(slot);
    held.push_back(std::move(*slot));
  }
  CHECK(!take_connection_slot(slots, "192.0.2.1", 3, error));
  CHECK(error.empty());  // full, not broken
  CHECK(take_connection_slot(slots, "2001:db8::1", 3, error));
  held.erase(held.begin() + 1);
  auto again = take_connection_slot(slots, "192.0.2.1", 3, error);
  CHECK(again);
  CHECK(!take_connection_slot(slots, "192.0.2.1", 3, error));
}

TEST_CASE("per-ip slots: a process killed with its slot gives it back") {
  TempDir dir;
  std::string slots = dir.path + "/per-ip", error;
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  pid_t child = ::fork();
  if (child == 0) {
    auto slot = take_connection_slot(slots, "192.0.2.9", 1, error);
    (void)!::write(ready[1], slot ? "y" : "n", 1);
    ::pause();
    ::_exit(0);
  }
  char got = 0;
  REQUIRE(::read(ready[0], &got, 1) == 1);
  CHECK(got == 'y');
  CHECK(!take_connection_slot(slots, "192.0.2.9", 1, error));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  CHECK(take_connection_slot(slots, "192.0.2.9", 1, error));
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST_CASE("per-ip slots: a directory others can write is refused with a reason") {
  TempDir dir;
  std::string error;
  REQUIRE(::chmod(dir.path.c_str(), 0777) == 0);
  CHECK(!take_connection_slot(dir.path, "192.0.2.1", 3, error));
  CHECK(!error.empty());
}
