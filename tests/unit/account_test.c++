// The account lookup and the system's first uid of ordinary accounts.
#include <doctest/doctest.h>

#include <unistd.h>

#include "auth/account.h"
#include "tests/unit/files.h"

using namespace popd::auth;
using namespace popd::testing;

TEST_CASE("system_uid_min reads UID_MIN from login.defs, else 1000") {
  TempDir dir;
  std::string defs = dir.path + "/login.defs";
  CHECK(system_uid_min(defs.c_str()) == 1000);  // no file
  write_file(defs, "# UID_MIN 5\nUID_MINIMUM 7\nSYS_UID_MIN 100\n  UID_MIN\t\t 2000\nUID_MAX 60000\n");
  CHECK(system_uid_min(defs.c_str()) == 2000);
  write_file(defs, "UID_MIN none\n");
  CHECK(system_uid_min(defs.c_str()) == 1000);
}

TEST_CASE("Account::named copies the entry") {
  auto root = Account::named("root");
  REQUIRE(root);
  CHECK(root->uid == 0);
  CHECK(root->name == "root");
  CHECK(!Account::named("no-such-user-popd-test"));
}
