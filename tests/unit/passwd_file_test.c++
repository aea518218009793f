// Dovecot's passwd-file format, and the rules for trusting the file.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "auth/passwd_file.h"
#include "tests/unit/files.h"

using namespace popd::auth;
using namespace popd::testing;

TEST_CASE("passwd-file lines: fields, empty fields, fewer fields, comments") {
  auto full = parse_entry("ann@example.org:{SHA512-CRYPT}$6$x$y:5000:5001::/var/vmail/example.org/ann::userdb_quota=1G");
  REQUIRE(full);
  CHECK(full->user == "ann@example.org");
  CHECK(full->password == "{SHA512-CRYPT}$6$x$y");
  CHECK(full->uid == 5000u);
  CHECK(full->gid == 5001u);
  CHECK(full->home == "/var/vmail/example.org/ann");

  auto short_entry = parse_entry("bob:{PLAIN}pw");
  REQUIRE(short_entry);
  CHECK(short_entry->user == "bob");
  CHECK(short_entry->password == "{PLAIN}pw");
  CHECK(!short_entry->uid);
  CHECK(!short_entry->gid);
  CHECK(short_entry->home.empty());

  auto empty_ids = parse_entry("cy:$y$j9T$a$b:::");
  REQUIRE(empty_ids);
  CHECK(!empty_ids->uid);

  CHECK(parse_entry("# a comment")->user.empty());
  CHECK(parse_entry("")->user.empty());
  CHECK(!parse_entry("no-password-field"));
  CHECK(!parse_entry(":pw"));
  CHECK(!parse_entry("dan:pw:x:1"));
  CHECK(!parse_entry("dan:pw:1:-1"));
  CHECK(!parse_entry("dan:pw:4294967295:1"));
  CHECK(!parse_entry("dan:pw:99999999999:1"));
}

TEST_CASE("a passwd-file: found, unknown, malformed, and only a file root alone can write") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: the file must be root's");
    return;
  }
  TempDir dir;
  REQUIRE(::chmod(dir.path.c_str(), 0755) == 0);
  std::string path = dir.path + "/users";
  write_file(path,
             "# users\n"
             "ann:{SHA512-CRYPT}$6$aaaaaaaa$hash-of-ann:5000:5000::/home/ann\r\n"
             "\n"
             "bob:{SHA512-CRYPT}$6$bbbbbbbb$hash-of-bob\n"
             "cy:{BLF-CRYPT}$2y$05$cccccccccccccccccccccuhash-of-cy\n"
             "dan\n"
             "ann:second-entry-ignored\n"
             "eve:pw:x");
  REQUIRE(::chmod(path.c_str(), 0640) == 0);

  PasswdLookup ann = find_user(path, "ann");
  CHECK(ann.result == PasswdLookup::Result::found);
  CHECK(ann.entry.password == "{SHA512-CRYPT}$6$aaaaaaaa$hash-of-ann");
  CHECK(ann.entry.home == "/home/ann");
  CHECK(ann.entry.line == 2);
  CHECK(ann.warnings.empty());
  // The most common scheme and cost: SHA-512 crypt, two of three.
  CHECK(ann.dummy_password.starts_with("{SHA512-CRYPT}$6$"));

  CHECK(find_user(path, "zed").result == PasswdLookup::Result::unknown);
  CHECK(find_user(path, "Ann").result == PasswdLookup::Result::unknown);
  CHECK(find_user(path, "").result == PasswdLookup::Result::unknown);
  // A malformed entry: to the client an unknown user; the log has why.
  PasswdLookup dan = find_user(path, "dan");
  CHECK(dan.result == PasswdLookup::Result::unknown);
  CHECK(dan.error == path + ":6: malformed entry");
  CHECK(find_user(path, "eve").result == PasswdLookup::Result::unknown);

  SUBCASE("others may read: a warning") {
    REQUIRE(::chmod(path.c_str(), 0644) == 0);
    PasswdLookup found = find_user(path, "bob");
    CHECK(found.result == PasswdLookup::Result::found);
    CHECK(found.warnings.size() == 1);
  }
  SUBCASE("others may write, or its group that is not root's, or it is not root's: refused") {
    REQUIRE(::chmod(path.c_str(), 0646) == 0);
    CHECK(find_user(path, "bob").result == PasswdLookup::Result::failed);
    REQUIRE(::chmod(path.c_str(), 0660) == 0);
    CHECK(find_user(path, "bob").result == PasswdLookup::Result::found);  // root's group
    REQUIRE(::chown(path.c_str(), 0, 8) == 0);
    CHECK(find_user(path, "bob").result == PasswdLookup::Result::failed);
    REQUIRE(::chmod(path.c_str(), 0640) == 0);
    REQUIRE(::chown(path.c_str(), 1, 8) == 0);
    CHECK(find_user(path, "bob").result == PasswdLookup::Result::failed);
  }
  SUBCASE("its directory others can change: refused") {
    REQUIRE(::chmod(dir.path.c_str(), 0777) == 0);
    CHECK(find_user(path, "bob").result == PasswdLookup::Result::failed);
  }
  SUBCASE("missing: failed, with the reason") {
    PasswdLookup missing = find_user(dir.path + "/none", "bob");
    CHECK(missing.result == PasswdLookup::Result::failed);
    CHECK(missing.missing);
    CHECK(missing.error.find("No such file") != std::string::npos);
    PasswdLookup no_directory = find_user(dir.path + "/none/users", "bob");
    CHECK(no_directory.result == PasswdLookup::Result::failed);
    CHECK(no_directory.missing);  // a domain's directory (%d) that is not there
    CHECK(!find_user(dir.path + "/users/users", "bob").missing);
  }
  SUBCASE("the dummy: the most common cost, bcrypt's cost counted apart") {
    write_file(path,
               "a:$2y$04$aaaaaaaaaaaaaaaaaaaaauhash-of-a\n"
               "b:$2y$15$bbbbbbbbbbbbbbbbbbbbbuhash-of-b\n"
               "c:$2y$15$cccccccccccccccccccccuhash-of-c\n"
               "d:$6$dddddddd$hash-of-d\n"
               "e:$6$eeeeeeee$hash-of-e\n"
               "f:$6$ffffffff$hash-of-f\n");
    CHECK(find_user(path, "zed").dummy_password.starts_with("$6$"));
    write_file(path, "a:$2y$04$aaaaaaaaaaaaaaaaaaaaauhash-of-a\nb:$2y$15$bbbbbbbbbbbbbbbbbbbbbuhash-of-b\n"
                     "c:$2y$15$cccccccccccccccccccccuhash-of-c\nd:$6$dddddddd$hash-of-d\n");
    CHECK(find_user(path, "zed").dummy_password.starts_with("$2y$15$"));
  }
}
