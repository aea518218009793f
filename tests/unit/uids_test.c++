// Unique-ids in other servers' forms (--uidl-scheme), on strings.
#include <doctest/doctest.h>

#include <unistd.h>

#include <limits>
#include <set>
#include <random>
#include <string>
#include <vector>

#include "mailbox/mbox/mbox.h"
#include "tests/unit/files.h"
#include "tests/unit/mboxes.h"

using namespace popd::mailbox;
using namespace popd::testing;

namespace {

std::vector<std::string> uids(const std::string& data, UidScheme scheme,
                              std::uint64_t parallel_from = std::numeric_limits<std::uint64_t>::max()) {
  StringSource source(data);
  Mbox box = parse(source, scheme, parallel_from);
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < box.messages.size(); ++i) ids.push_back(box.uid(i));
  return ids;
}

std::string message(const std::string& header, const std::string& body = "body\n") {
  return "From sender@example.org Mon Jan  1 00:00:00 2024\n" + header + "\n" + body + "\n";
}

bool popd_shaped(const std::string& id) { return id.size() >= 32 && id.find_first_not_of("0123456789abcdef") >= 32; }

}  // namespace

TEST_CASE("popa3d: the header lines that stay put, and only those, make the id") {
  std::string base = "Received: from a\n\tby b\nReceived: from c\nDate: Mon\nMessage-ID: <1@x>\nSubject: s\n";
  std::string id = uids(message(base), UidScheme::popa3d).at(0);
  CHECK(id.size() == 16);
  CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
  auto same = [&](const std::string& header) { return uids(message(header), UidScheme::popa3d).at(0) == id; };
  // Not hashed: other headers, a second Received, the body, Status.
  CHECK(same(base + "Status: RO\nX-UID: 3\n"));
  CHECK(same("Received: from a\n\tby b\nReceived: from elsewhere\nDate: Mon\nMessage-ID: <1@x>\nSubject: t\n"));
  CHECK(uids(message(base, "other body\n"), UidScheme::popa3d).at(0) == id);
  // Hashed: the first Received and its continuation, Date and Message-ID.
  CHECK(!same("Received: from a\n\tby c\nReceived: from c\nDate: Mon\nMessage-ID: <1@x>\nSubject: s\n"));
  CHECK(same("Received: from a\n\tby b\nReceived: from c\nDate: Tue\nMessage-ID: <1@x>\nSubject: s\n"));
  CHECK(same("Received: from a\n\tby b\nReceived: from c\nDate: Mon\nMessage-ID: <2@x>\nSubject: s\n"));
  std::string before = "Date: Mon\nReceived: from a\n";
  CHECK(uids(message(before), UidScheme::popa3d).at(0) !=
        uids(message("Date: Tue\nReceived: from a\n"), UidScheme::popa3d).at(0));
  // X-Delivery-ID only with a capital X, as popa3d 1.0.3.
  CHECK(uids(message("x-delivery-id: 1\n"), UidScheme::popa3d).at(0) ==
        uids(message("x-delivery-id: 2\n"), UidScheme::popa3d).at(0));
  CHECK(uids(message("X-Delivery-ID: 1\n"), UidScheme::popa3d).at(0) !=
        uids(message("X-Delivery-ID: 2\n"), UidScheme::popa3d).at(0));
  // Without any such line: the MD5 of nothing, in popa3d's byte order.
  CHECK(uids(message("Subject: s\n"), UidScheme::popa3d).at(0) == "d98c1dd404b2008f");
}

TEST_CASE("dovecot and uw-imap: X-UID with the first message's X-IMAPbase, or UW's pseudo-message") {
  std::string data = message("X-IMAPbase: 1700000000 0000000003\nX-UID: 1\nSubject: a\n") +
                     message("X-UID: 2                \nSubject: b\n") + message("Subject: new, no X-UID\n");
  auto dovecot = uids(data, UidScheme::dovecot);
  CHECK(dovecot.at(0) == "000000016553f100");
  CHECK(dovecot.at(1) == "000000026553f100");
  CHECK(popd_shaped(dovecot.at(2)));
  auto uw = uids(data, UidScheme::uw_imap);
  CHECK(uw.at(0) == "6553f10000000001");
  CHECK(uw.at(1) == "6553f10000000002");
  std::string pseudo = message("Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\nX-IMAP: 1700000000 2\n") +
                       message("X-UID: 7\nSubject: a\n");
  CHECK(uids(pseudo, UidScheme::uw_imap) == std::vector<std::string>{"6553f10000000007"});
  // No UIDVALIDITY anywhere (its message deleted, say): popd's own ids.
  auto orphaned = uids(message("X-UID: 2\nSubject: b\n"), UidScheme::dovecot);
  CHECK(popd_shaped(orphaned.at(0)));
}

TEST_CASE("x-uidl: the header's value if it is a valid id") {
  std::string data = message("X-UIDL: abc.123\nSubject: a\n") + message("X-UIDL:    spaced   \n") +
                     message("X-UIDL: " + std::string(71, 'x') + "\n") + message("X-UIDL: has space\n") +
                     message("Subject: none\n");
  auto ids = uids(data, UidScheme::x_uidl);
  CHECK(ids.at(0) == "abc.123");
  CHECK(ids.at(1) == "spaced");
  CHECK(popd_shaped(ids.at(2)));
  CHECK(popd_shaped(ids.at(3)));
  CHECK(popd_shaped(ids.at(4)));
}

TEST_CASE("every scheme: later messages with the same id get -2, -3, ...; all ids distinct") {
  std::string copy = message("Received: from a\nX-UIDL: same\nX-IMAPbase: 5 2\nX-UID: 1\n");
  std::string data = copy + copy + message("X-UID: 1\nX-UIDL: same\nReceived: from a\n") + copy;
  for (UidScheme scheme : {UidScheme::popd, UidScheme::popa3d, UidScheme::dovecot, UidScheme::uw_imap,
                           UidScheme::x_uidl}) {
    auto ids = uids(data, scheme);
    REQUIRE(ids.size() == 4);
    CHECK(ids.at(1) == ids.at(0) + "-2");
    // The third has the same old id (not the same digest: popd's own
    // differs).
    CHECK(ids.at(3) == ids.at(0) + (scheme == UidScheme::popd ? "-3" : "-4"));
    std::set<std::string> distinct(ids.begin(), ids.end());
    CHECK(distinct.size() == 4);
  }
}

TEST_CASE("schemes: two threads, an appended tail and a commit give what one pass gives") {
  std::mt19937 random(2024);
  for (UidScheme scheme : {UidScheme::popa3d, UidScheme::dovecot, UidScheme::x_uidl}) {
    for (int round = 0; round < 40; ++round) {
      std::string data = message("X-IMAPbase: 99 1\nX-UID: 1\nX-UIDL: first\n");
      int count = 2 + static_cast<int>(random() % 20);
      for (int i = 0; i < count; ++i)
        data += message("Received: from " + std::to_string(random() % 5) + "\nX-UID: " + std::to_string(i + 2) +
                        "\nX-UIDL: id" + std::to_string(random() % 6) + "\n" + random_message(random, false));
      auto whole = uids(data, scheme);
      CHECK(uids(data, scheme, 0) == whole);
      StringSource all(data);
      std::size_t cut = data.find("\nFrom ", data.size() / 2) + 1;
      StringSource first_part(std::string_view(data).substr(0, cut));
      Mbox known = parse(first_part, scheme);
      Mbox resumed = parse_after(all, known, 0);
      std::vector<std::string> ids;
      for (std::size_t i = 0; i < resumed.messages.size(); ++i) ids.push_back(resumed.uid(i));
      CHECK(ids == whole);
    }
  }
}

TEST_CASE("x-uidl: a copy whose id with -N is another message's X-UIDL gets popd's own id") {
  std::string data = message("X-UIDL: a\n") + message("X-UIDL: a\n") + message("X-UIDL: a-2\n");
  auto ids = uids(data, UidScheme::x_uidl);
  CHECK(ids.at(0) == "a");
  CHECK(popd_shaped(ids.at(1)));
  CHECK(ids.at(1).size() == 32);  // the only one with popd's id: no "-2" of its own
  CHECK(ids.at(2) == "a-2");
  // Once the first is deleted, the copy's own X-UIDL is free again.
  StringSource source(data);
  Mbox box = parse(source, UidScheme::x_uidl);
  box.remove({true, false, false});
  CHECK(box.uid(0) == "a");
  CHECK(box.uid(1) == "a-2");
  std::string longest = "X-UIDL: " + std::string(69, 'v') + "\n";
  ids = uids(message(longest) + message(longest), UidScheme::x_uidl);
  CHECK(ids.at(0) == std::string(69, 'v'));
  CHECK(popd_shaped(ids.at(1)));  // with "-2" it would be 71 characters
}

TEST_CASE("the UIDVALIDITY file is read only when it is the owner's own") {
  TempDir dir;
  std::string path = dir.path + "/uidvalidity";
  std::string refused;
  CHECK(!read_validity(path, ::geteuid(), refused));  // none yet
  CHECK(refused.empty());
  std::string error;
  REQUIRE(write_validity(path, 1234, error));
  CHECK(read_validity(path, ::geteuid(), refused) == 1234u);
  CHECK(refused.empty());
  CHECK(!read_validity(path, ::geteuid() + 1, refused));
  CHECK(refused.find("belongs to uid") != std::string::npos);
  refused.clear();
  REQUIRE(::link(path.c_str(), (path + ".second").c_str()) == 0);
  CHECK(!read_validity(path, ::geteuid(), refused));
  CHECK(refused.find("2 names") != std::string::npos);
}
