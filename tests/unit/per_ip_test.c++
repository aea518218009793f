// --max-per-ip's slots: lock files per client address.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <string>
#include <vector>

#include "server/per_ip.h"
#include "tests/unit/files.h"

using namespace popd::server;
using namespace popd::testing;

TEST_CASE("per-ip slots: N for an address, the next refused; other addresses apart; a slot closed is free") {
  TempDir dir;
  std::string slots = dir.path + "/per-ip";
  std::vector<SlotTaken> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(take_connection_slot(slots, "192.0.2.1", 3));
    REQUIRE(held.back().slot);
  }
  SlotTaken full = take_connection_slot(slots, "192.0.2.1", 3);
  CHECK(!full.slot);
  CHECK(full.full);
  CHECK(full.error.empty());
  CHECK(take_connection_slot(slots, "2001:db8::1", 3).slot);
  held[1].slot.reset();
  CHECK(take_connection_slot(slots, "192.0.2.1", 3).slot);
  struct stat st;
  REQUIRE(::stat(slots.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
}

TEST_CASE("per-ip slots: an IPv6 client is counted by its /64, IPv4 by its address") {
  CHECK(counted_source("192.0.2.1") == "192.0.2.1");
  CHECK(counted_source("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::-64");
  CHECK(counted_source("2001:db8::1") == "2001:db8::-64");
  CHECK(counted_source("::1") == "::-64");
  TempDir dir;
  std::string slots = dir.path + "/per-ip";
  SlotTaken one = take_connection_slot(slots, "2001:db8:1:2::1", 2);
  SlotTaken two = take_connection_slot(slots, "2001:db8:1:2::2", 2);
  REQUIRE((one.slot && two.slot));
  CHECK(take_connection_slot(slots, "2001:db8:1:2:ffff::3", 2).full);
  CHECK(take_connection_slot(slots, "2001:db8:1:3::1", 2).slot);
}

TEST_CASE("per-ip slots: a process killed with its slot gives it back") {
  TempDir dir;
  std::string slots = dir.path + "/per-ip";
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  pid_t child = ::fork();
  if (child == 0) {
    SlotTaken taken = take_connection_slot(slots, "192.0.2.9", 1);
    (void)!::write(ready[1], taken.slot ? "y" : "n", 1);
    ::pause();
    ::_exit(0);
  }
  char got = 0;
  REQUIRE(::read(ready[0], &got, 1) == 1);
  CHECK(got == 'y');
  CHECK(take_connection_slot(slots, "192.0.2.9", 1).full);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  CHECK(take_connection_slot(slots, "192.0.2.9", 1).slot);
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST_CASE("per-ip slots: a directory others can write is refused with a reason, not as full") {
  TempDir dir;
  REQUIRE(::chmod(dir.path.c_str(), 0777) == 0);
  SlotTaken taken = take_connection_slot(dir.path, "192.0.2.1", 3);
  CHECK(!taken.slot);
  CHECK(!taken.full);
  CHECK(!taken.error.empty());
}
