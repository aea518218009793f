// Maildir names, listings, message files and deletions, on real files.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "mailbox/maildir/checked_file.h"
#include "mailbox/maildir/deletions.h"
#include "mailbox/maildir/listing.h"
#include "mailbox/maildir/message.h"
#include "mailbox/maildir/old_ids.h"
#include "mailbox/maildir/seen.h"
#include "mailbox/maildir/sizes.h"
#include "sys/fd.h"
#include "tests/unit/files.h"

using namespace popd::mailbox::maildir;
using namespace popd::testing;
using popd::sys::UniqueFd;

namespace {

struct Lines final : popd::protocol::MessageSink {
  std::string sent;
  void text(std::string_view part) override { sent += part; }
  void end_line() override { sent += "\r\n"; }
};

struct File {
  TempDir dir;
  UniqueFd fd;
  explicit File(const std::string& data) {
    write_file(dir.path + "/m", data);
    fd.reset(::open((dir.path + "/m").c_str(), O_RDONLY));
  }
};

// What RETR (or TOP, with body_lines) sends of a file holding `data`.
std::string sent(const std::string& data, std::optional<std::uint64_t> body_lines = std::nullopt) {
  File file(data);
  Lines lines;
  REQUIRE(send_message(file.fd.get(), body_lines, lines));
  return lines.sent;
}

std::uint64_t size_of(const std::string& data) { return *wire_size(File(data).fd.get()); }

struct Box {
  TempDir dir;
  std::string path = dir.path + "/Maildir";
  UniqueFd fd;
  Box() {
    for (const char* folder : {"", "/new", "/cur", "/tmp"}) REQUIRE(::mkdir((path + folder).c_str(), 0700) == 0);
    fd.reset(::open(path.c_str(), O_RDONLY | O_DIRECTORY));
  }
  void add(const std::string& name, const std::string& data = "Subject: x\n\nbody\n") {
    write_file(path + "/" + name, data);
  }
  std::vector<std::string> listed() {
    Listing listing;
    std::string skipped;
    REQUIRE(scan(fd.get(), listing, skipped));
    std::vector<std::string> names;
    for (std::size_t i = 0; i < listing.size(); ++i)
      names.push_back(std::string(folder_name(listing[i].folder)) + "/" + std::string(listing.name(listing[i])));
    return names;
  }
};

}  // namespace

TEST_CASE("a Maildir name gives its base, delivery time and wire size") {
  Name name = parse_name("1700000123.M5P77.host,S=1200,W=1234:2,RS");
  CHECK(name.base == "1700000123.M5P77.host,S=1200,W=1234");
  CHECK(name.delivered == 1700000123);
  CHECK(name.wire_size == 1234u);
  CHECK(!parse_name("1700000123.M5P77.host,S=1200").wire_size);
  CHECK(!parse_name("odd,W=x").wire_size);
  CHECK(parse_name("no-time:2,").delivered == 0);
  CHECK(parse_name("no-flags").base == "no-flags");
}

TEST_CASE("a message is sent with CRLF line ends, exactly as stored otherwise") {
  CHECK(sent("a\nb\n") == "a\r\nb\r\n");
  CHECK(sent("a\r\nb\r\n") == "a\r\nb\r\n");
  CHECK(sent("no newline at the end") == "no newline at the end\r\n");
  CHECK(sent("ends in CR\r") == "ends in CR\r\n");
  CHECK(sent("bare\rcr\n") == "bare\rcr\r\n");
  CHECK(sent("From x\n>From y\n\n.dot\n") == "From x\r\n>From y\r\n\r\n.dot\r\n");
  CHECK(sent("") == "");
  std::string big(3 << 20, 'x');  // lines across read blocks, and longer than one
  for (std::size_t i = 1000; i < big.size(); i += 70001) big[i] = '\n';
  big[2 << 20] = '\n';
  big[(2 << 20) - 1] = '\r';  // a CRLF split across two reads
  big.back() = '\n';
  std::string expected = big;
  for (std::size_t at = expected.find('\n'); at != std::string::npos; at = expected.find('\n', at + 2))
    if (expected[at - 1] != '\r') expected.insert(at, "\r");
  CHECK(sent(big) == expected);
  CHECK(size_of(big) == expected.size());
}

TEST_CASE("LIST's size is RETR's octets, but for the CRLF sent after a last line without LF") {
  CHECK(size_of("a\nb\n") == 6);
  CHECK(size_of("a\r\nb\r\n") == 6);
  CHECK(size_of("bare\rcr\n") == 9);
  CHECK(size_of("no newline") == 10);  // sent as 12, as Dovecot counts it
  CHECK(size_of("") == 0);
}

TEST_CASE("TOP sends the header, the empty line and that many body lines") {
  std::string message = "A: 1\nB: 2\n\none\ntwo\nthree\n";
  CHECK(sent(message, 0) == "A: 1\r\nB: 2\r\n\r\n");
  CHECK(sent(message, 2) == "A: 1\r\nB: 2\r\n\r\none\r\ntwo\r\n");
  CHECK(sent(message, 9) == "A: 1\r\nB: 2\r\n\r\none\r\ntwo\r\nthree\r\n");
  CHECK(sent("only: header\n", 3) == "only: header\r\n");
  CHECK(sent("A: 1\r\n\r\nbody\r\nmore\r\n", 1) == "A: 1\r\n\r\nbody\r\n");
}

TEST_CASE("the listing: new/ and cur/, by delivery time, links and hidden files left out") {
  Box box;
  box.add("cur/1700000003.c.host:2,S");
  box.add("new/1700000001.a.host");
  box.add("new/1700000002.b.host,S=10,W=12");
  box.add("new/.hidden");
  REQUIRE(::symlink("/etc/passwd", (box.path + "/cur/1700000000.link:2,").c_str()) == 0);
  CHECK(box.listed() == std::vector<std::string>{"new/1700000001.a.host", "new/1700000002.b.host,S=10,W=12",
                                                 "cur/1700000003.c.host:2,S"});
  Listing listing;
  std::string skipped;
  REQUIRE(scan(box.fd.get(), listing, skipped));
  CHECK(skipped.find("cur/1700000000.link:2,") != std::string::npos);
  CHECK(listing[1].sized);
  CHECK(listing[1].size == 12);
}

TEST_CASE("a message seen in new/ and in cur/ (moved during the scan) is listed once, from cur/") {
  Listing listing;
  listing.add(Folder::new_mail, "1700000001.a.host");
  listing.add(Folder::current, "1700000001.a.host:2,S");
  listing.add(Folder::current, "1700000000.z.host:2,");
  listing.finish();
  REQUIRE(listing.size() == 2);
  CHECK(listing.name(listing[1]) == "1700000001.a.host:2,S");
}

TEST_CASE("deletions: all of them, under new names, those gone count; the journal completes them") {
  Box box;
  std::string journal = box.dir.path + "/journal";
  box.add("new/1.a.host");
  box.add("cur/2.b.host:2,S");
  box.add("cur/3.c.host:2,");
  box.add("cur/4.d.host:2,");
  REQUIRE(::rename((box.path + "/cur/2.b.host:2,S").c_str(), (box.path + "/cur/2.b.host:2,RS").c_str()) == 0);
  std::string error;
  Listing listing;
  listing.add(Folder::new_mail, "1.a.host");
  listing.add(Folder::current, "2.b.host:2,S");
  listing.add(Folder::current, "3.c.host:2,");
  listing.add(Folder::current, "9.gone:2,");
  CHECK(delete_messages(box.fd.get(), listing, {true, true, false, true}, journal, error));
  CHECK(error.empty());
  CHECK(box.listed() == std::vector<std::string>{"cur/3.c.host:2,", "cur/4.d.host:2,"});
  CHECK(!exists(journal));

  auto journal_for = [&](std::uint64_t inode, const std::string& lines) {
    CheckedFile file(journal, "popd-maildir-deletions-1\n");
    file.add("maildir " + std::to_string(inode) + "\n" + lines);
    REQUIRE(file.finish(false, error));
  };
  struct stat st;
  REQUIRE(::fstat(box.fd.get(), &st) == 0);
  SUBCASE("a journal left by a crash is completed: renamed and gone messages too") {
    REQUIRE(::rename((box.path + "/cur/4.d.host:2,").c_str(), (box.path + "/new/4.d.host").c_str()) == 0);
    journal_for(st.st_ino, "cur 3.c.host:2,\ncur 4.d.host:2,\nnew 8.gone\n");
    Recovered recovered = complete_deletions(box.fd.get(), journal);
    CHECK(recovered.ok);
    CHECK(recovered.note.find("3 messages") != std::string::npos);
    CHECK(box.listed().empty());
    CHECK(!exists(journal));
  }
  SUBCASE("a journal of another Maildir is refused and kept") {
    journal_for(st.st_ino + 1, "cur 4.d.host:2,\n");
    CHECK(!complete_deletions(box.fd.get(), journal).ok);
    CHECK(exists(journal));
    CHECK(box.listed().size() == 2);
  }
  SUBCASE("a damaged journal is refused and kept") {
    journal_for(st.st_ino, "cur 4.d.host:2,\n");
    std::string text = read_file(journal);
    text[text.find("4.d")] = '5';
    write_file(journal, text);
    CHECK(!complete_deletions(box.fd.get(), journal).ok);
    CHECK(exists(journal));
    CHECK(box.listed().size() == 2);
  }
}

TEST_CASE("a message read gets the S flag among its flags, in order, in cur/") {
  CHECK(seen_name(Folder::new_mail, "1.a.host") == "1.a.host:2,S");
  CHECK(seen_name(Folder::new_mail, "1.a.host:2,S") == "1.a.host:2,S");  // moved only
  CHECK(seen_name(Folder::current, "1.a.host:2,") == "1.a.host:2,S");
  CHECK(seen_name(Folder::current, "1.a.host:2,FT") == "1.a.host:2,FST");
  CHECK(seen_name(Folder::current, "1.a.host:2,ab") == "1.a.host:2,Sab");  // lower-case: experimental flags, after
  CHECK(seen_name(Folder::current, "1.a.host:2,T") == "1.a.host:2,ST");
  CHECK(!seen_name(Folder::current, "1.a.host:2,RS"));
  CHECK(!seen_name(Folder::current, "1.a.host:1,xyz"));  // another kind of info: left alone
  CHECK(!seen_name(Folder::new_mail, "1.a.host:1,"));
}

TEST_CASE("marking seen: renamed meanwhile, or the new name taken: left as it is") {
  Box box;
  box.add("new/1.a.host");
  box.add("new/2.b.host");
  box.add("new/3.c.host");
  box.add("cur/4.d.host:2,");
  Listing listing;
  std::string skipped;
  REQUIRE(scan(box.fd.get(), listing, skipped));
  REQUIRE(::rename((box.path + "/new/2.b.host").c_str(), (box.path + "/cur/2.b.host:2,F").c_str()) == 0);
  write_file(box.path + "/cur/3.c.host:2,S", "another file\n");
  mark_seen(box.fd.get(), listing, {true, true, true, true});
  std::vector<std::string> files;
  for (const char* folder : {"cur", "new"})
    for (const auto& file : std::filesystem::directory_iterator(box.path + "/" + folder))
      files.push_back(std::string(folder) + "/" + file.path().filename().string());
  std::sort(files.begin(), files.end());
  CHECK(files == std::vector<std::string>{"cur/1.a.host:2,S", "cur/2.b.host:2,F", "cur/3.c.host:2,S",
                                          "cur/4.d.host:2,S", "new/3.c.host"});
  CHECK(read_file(box.path + "/cur/3.c.host:2,S") == "another file\n");
}

TEST_CASE("the sizes file: used only for names it knows, and only when whole") {
  Box box;
  box.add("cur/1.a.host:2,");
  box.add("cur/2.b.host,S=1,W=7:2,");
  Listing listing;
  std::string skipped, error;
  REQUIRE(scan(box.fd.get(), listing, skipped));
  listing[0].size = 42;
  std::string path = box.dir.path + "/sizes";
  REQUIRE(Sizes::save(path, listing, error));
  Sizes sizes;
  sizes.load(path);
  CHECK(sizes.find("1.a.host") == 42u);
  CHECK(!sizes.find("2.b.host,S=1,W=7"));  // its name says it
  CHECK(!sizes.find("3.c.host"));
  std::string text = read_file(path);
  text[text.find("42")] = '9';
  write_file(path, text);
  sizes.load(path);
  CHECK(sizes.count() == 0);
}

TEST_CASE("the sizes file: many names, found whatever order they are asked in") {
  TempDir dir;
  Listing listing;
  for (int i = 999; i >= 0; --i) listing.add(Folder::current, std::to_string(1700000000 + i) + ".M" + std::to_string(i) + ".host:2,");
  for (std::size_t i = 0; i < listing.size(); ++i) listing[i].size = 1000 + i;
  std::string path = dir.path + "/sizes", error;
  REQUIRE(Sizes::save(path, listing, error));
  Sizes sizes;
  sizes.load(path);
  REQUIRE(sizes.count() == 1000);
  for (std::size_t step : {1u, 7u, 999u})
    for (std::size_t k = 0, i = 0; k < listing.size(); ++k, i = (i + step) % listing.size())
      CHECK(sizes.find(listing.base(listing[i])) == listing[i].size);
  CHECK(!sizes.find("1700000000.M0.hos"));
  CHECK(!sizes.find("1700000000.M0.host0"));
  CHECK(!sizes.find(""));

  SUBCASE("written out of order by another hand: still found") {
    CheckedFile file(path, "popd-maildir-sizes-1\n");
    file.add("3 c\n1 a\n2 b\n");
    REQUIRE(file.finish(false, error));
    sizes.load(path);
    CHECK(sizes.find("a") == 1u);
    CHECK(sizes.find("c") == 3u);
    CHECK(sizes.find("b") == 2u);
  }
  SUBCASE("a last line without its end, or a line without a size: not used") {
    for (const char* body : {"1 a\n2 b", "1 a\nb\n", "x a\n"}) {
      CheckedFile file(path, "popd-maildir-sizes-1\n");
      file.add(body);
      REQUIRE(file.finish(false, error));
      sizes.load(path);
      CHECK(sizes.count() == 0);
    }
  }
}

namespace {

struct Named {
  std::string id;
  std::uint64_t order;
};

std::map<std::string, Named> ids_of(void (*each)(std::string_view, const IdSink&), std::string_view text) {
  std::map<std::string, Named> ids;
  each(text, [&](std::string_view base, std::string id, std::uint64_t order) {
    ids[std::string(base)] = {std::move(id), order};
  });
  return ids;
}

}  // namespace

TEST_CASE("other servers' ids: dovecot-uidlist and courierpop3dsizelist") {
  auto dovecot = ids_of(each_dovecot_id,
      "3 V1700000000 N4 G0123456789abcdef0123456789abcdef\n"
      "1 :1699999990.M1P1.host,S=10,W=12\n"
      "2 W12 P0000abcd :1699999991.M2P1.host:2,S\n"
      "3 GXX :1699999992.M3P1.host\n"
      "junk line\n");
  REQUIRE(dovecot.size() == 3);
  CHECK(dovecot.at("1699999990.M1P1.host,S=10,W=12").id == "000000016553f100");
  CHECK(dovecot.at("1699999991.M2P1.host").id == "0000abcd");  // the POP3 UIDL it saved
  CHECK(dovecot.at("1699999992.M3P1.host").order == 3);
  auto old = ids_of(each_dovecot_id, "1 1700000000 3\n7 1699999990.M1P1.host:2,\n");
  CHECK(old.at("1699999990.M1P1.host").id == "000000076553f100");
  CHECK(ids_of(each_dovecot_id, "4 V1 N2\n1 :a\n").empty());

  auto courier = ids_of(each_courier_id,
      "/3 4 1796628238\n"
      "1700000001.M1P1.host:2, 21 1:1796628238:0\n"
      "1700000002.M2P1.host:2,S 22 2:1796628238:0\n"
      "old.host 10 3:0:0\n"
      "broken\n");
  REQUIRE(courier.size() == 3);
  CHECK(courier.at("1700000001.M1P1.host").id == "UID1-1796628238");
  CHECK(courier.at("old.host").id == "UID3");
  CHECK(ids_of(each_courier_id, "/1 2 3\na 1 1:1\n").empty());
}

TEST_CASE("ids from a list: only for messages there, first in its order, none shared") {
  Box box;
  box.add("cur/1.a.host:2,");
  box.add("cur/2.b.host:2,");
  box.add("cur/3.c.host:2,");
  box.add("cur/4.d.host:2,");
  write_file(box.path + "/dovecot-uidlist",
             "3 V1 N9\n5 :3.c.host\n6 :1.a.host:2,S\n7 P0000abcd :2.b.host\n8 P0000abcd :4.d.host\n9 :9.gone\n");
  Listing listing;
  std::string skipped;
  REQUIRE(scan(box.fd.get(), listing, skipped));
  adopt_old_ids(box.fd.get(), popd::mailbox::UidScheme::dovecot, listing);
  REQUIRE(listing.size() == 4);
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < listing.size(); ++i)
    ids.push_back(std::string(listing.base(listing[i])) + "=" + std::string(listing.old_id(listing[i])));
  // 4.d shares 2.b's saved id: it keeps its own (none from the list), after the others.
  CHECK(ids == std::vector<std::string>{"3.c.host=0000000500000001", "1.a.host=0000000600000001",
                                        "2.b.host=0000abcd", "4.d.host="});
}
