// The mbox parser and message presentation, on strings.
#include <doctest/doctest.h>

#include <array>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "mailbox/mbox/mbox.h"
#include "params.h"
#include "tests/unit/mboxes.h"

using namespace popd::mailbox;
using namespace popd::testing;

namespace {

Mbox parse_string(const std::string& data) {
  StringSource source(data);
  return parse(source);
}

std::string sent(const std::string& data, const Message& message,
                 std::optional<std::uint64_t> body_lines = std::nullopt, ReadBuffer* kept = nullptr) {
  StringSource source(data);
  CollectSink sink;
  ReadBuffer fresh;
  send(source, message, body_lines, sink, kept ? *kept : fresh);
  return sink.out;
}

// What the client must receive for a message as delivered: CRLF lines, the
// metadata headers (and their continuation lines) left out of the header.
std::string expected_form(std::string_view message) {
  std::string out;
  bool in_header = true, hidden = false;
  while (!message.empty()) {
    auto nl = message.find('\n');
    std::string_view line = message.substr(0, nl);
    message.remove_prefix(nl == std::string_view::npos ? message.size() : nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (in_header && line.empty()) in_header = false;
    if (in_header) {
      if (line.front() != ' ' && line.front() != '\t') {
        std::string name(line.substr(0, line.find(':')));
        for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        hidden = name == "status" || name == "x-status" || name == "x-keywords" || name == "x-uid" ||
                 name == "x-imap" || name == "x-imapbase";
      }
      if (hidden) continue;
    }
    out += line;
    out += "\r\n";
  }
  return out;
}

}  // namespace

TEST_CASE("random mailboxes: every message comes back as delivered, sizes match") {
  std::mt19937 random(12345);
  for (int round = 0; round < 300; ++round) {
    bool crlf = round % 3 == 0;
    std::string eol = crlf ? "\r\n" : "\n";
    std::vector<std::string> messages;
    std::string mbox;
    int count = static_cast<int>(random() % 20);
    for (int i = 0; i < count; ++i) {
      messages.push_back(random_message(random, crlf));
      mbox += "From sender@example.org Mon Jan  1 00:00:0" + std::to_string(i % 10) + " 2024" + eol;
      mbox += messages.back() + eol;
    }
    Mbox box = parse_string(mbox);
    REQUIRE(box.messages.size() == messages.size());
    CHECK(!box.internal);
    for (std::size_t i = 0; i < messages.size(); ++i) {
      std::string got = sent(mbox, box.messages[i]);
      CHECK(got == expected_form(messages[i]));
      CHECK(box.messages[i].size == got.size());
    }
  }
}

TEST_CASE("bodies are scanned in blocks: separators at every offset around the read window's end") {
  // The body scan reads params::read_block bytes at a time, looks two bytes
  // back for the empty line and five ahead for "From ": put the separator,
  // LF and CRLF, on each side of the window's end, with lines that start
  // with "F" and "From" (no separator) near it too.
  for (std::string eol : {"\n", "\r\n"}) {
    for (int shift = -24; shift <= 24; ++shift) {
      std::string first = "Subject: big" + eol + eol + "Filler" + eol + "From x" + eol;
      std::string head = "From a Mon Jan  1 00:00:00 2024" + eol;
      std::size_t target = popd::params::read_block + shift;  // where the separator's empty line starts
      std::size_t used = head.size() + first.size();
      while (used + 80 + eol.size() < target) {
        first += std::string(79, 'b') + eol;
        used += 79 + eol.size();
      }
      first += std::string(target - used - eol.size(), 'c') + eol;
      std::string second = "Subject: next" + eol + eol + "F" + eol + eol + "Fro" + eol;
      std::string data = head + first + eol + "From b Mon Jan  1 00:00:00 2024" + eol + second;
      REQUIRE(data.substr(target, eol.size() + 5) == eol + "From ");
      Mbox box = parse_string(data);
      REQUIRE(box.messages.size() == 2);
      CHECK(box.messages[1].record_offset == target + eol.size());
      CHECK(sent(data, box.messages[0]) == expected_form(first));
      CHECK(box.messages[0].size == expected_form(first).size());
      CHECK(box.messages[1].size == expected_form(second).size());
    }
  }
}

void check_parallel_parse(const std::string& data, UidScheme scheme = UidScheme::popd) {
  StringSource source(data);
  Mbox one_pass = parse(source, scheme, std::numeric_limits<std::uint64_t>::max());
  Mbox two_threads = parse(source, scheme, 0);
  CHECK(summary(two_threads) == summary(one_pass));
}

TEST_CASE("two threads find what one pass finds") {
  std::mt19937 random(777);
  for (int round = 0; round < 200; ++round) {
    std::string eol = round % 3 == 0 ? "\r\n" : "\n";
    std::string mbox = random_mbox(random, 1 + static_cast<int>(random() % 30), eol, round % 5 == 0);
    check_parallel_parse(mbox);
  }
  SUBCASE("the middle is inside a body whose Content-Length is trusted") {
    std::string body = std::string(4000, 'a') + "\n\nFrom not a separator\n" + std::string(3900, 'b') + "\n";
    std::string data = "From a Mon Jan  1 00:00:00 2024\nContent-Length: " + std::to_string(body.size()) +
                       "\n\n" + body + "\nFrom b Mon Jan  1 00:00:00 2024\nSubject: 2\n\nx\n";
    // The first separator after the middle is the one inside the body.
    REQUIRE(data.find("\n\nFrom ", data.size() / 2) == data.find("\n\nFrom not"));
    check_parallel_parse(data);
    StringSource source(data);
    CHECK(parse(source, UidScheme::popd, 0).messages.size() == 2);
  }
  SUBCASE("identical copies on both sides of the middle are numbered in file order") {
    std::string message = "From s Mon Jan  1 00:00:00 2024\nSubject: same\n\nbody\n\n";
    std::string data;
    for (int i = 0; i < 6; ++i) data += message;
    check_parallel_parse(data);
  }
  // UW IMAP's ids take the UIDVALIDITY from the file's first record, or
  // the first message after a pseudo-message without X-IMAP.
  std::string pseudo = "From MAILER-DAEMON Mon Jan  1 00:00:00 2024\n"
                       "Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\nX-IMAP: 7 9\n\nx\n\n";
  std::string first = "From a Mon Jan  1 00:00:00 2024\nX-IMAPbase: 5 3\nX-UID: 1\n\nb\n\n";
  std::string second = "From b Mon Jan  1 00:00:00 2024\nX-UID: 2\nSubject: " + std::string(300, 's') + "\n\nc\n";
  SUBCASE("the middle is the first message after a pseudo-message without X-IMAP") {
    std::string no_x_imap = pseudo;
    no_x_imap.replace(no_x_imap.find("X-IMAP"), 6, "X-IMAQ");
    std::string rest = first + second;
    no_x_imap.insert(no_x_imap.size() - 2, std::string(rest.size() + 10 - no_x_imap.size(), 'x'));
    std::string data = no_x_imap + rest;
    REQUIRE(data.find("\n\nFrom ", data.size() / 2) + 2 == data.find("From a"));
    check_parallel_parse(data, UidScheme::uw_imap);
    StringSource source(data);
    CHECK(parse(source, UidScheme::uw_imap, 0).uid(0) == "0000000500000001");
  }
  SUBCASE("only empty lines before the middle: its record is the file's first") {
    std::string data = std::string(400, '\n') + pseudo + first;
    check_parallel_parse(data, UidScheme::uw_imap);
    StringSource source(data);
    Mbox box = parse(source, UidScheme::uw_imap, 0);
    CHECK(box.internal);
    CHECK(box.uid(0) == "0000000700000001");
  }
}

TEST_CASE("parse_after: a known prefix and what was appended give what a whole parse gives") {
  std::mt19937 random(4242);
  // What MDAs and mistakes append: messages after an empty line, a message
  // with no empty line before it (so it continues the last one), bytes
  // that end a line that had none, nothing but an empty line.
  std::vector<std::string> tails = {"From t Mon Jan  1 00:00:00 2024\nSubject: t\n\nnew\n\n",
                                    "From u Mon Jan  1 00:00:00 2024\nSubject: u\n\nno empty line before\n",
                                    "rest of a line\n", "\n", "\r\n"};
  for (int round = 0; round < 200; ++round) {
    std::string eol = round % 3 == 0 ? "\r\n" : "\n";
    std::string before = random_mbox(random, static_cast<int>(random() % 8), eol, round % 7 == 0);
    if (round % 4 == 0 && !before.empty()) before.pop_back();  // the last line without its newline
    std::string tail = tails[random() % tails.size()] + (round % 2 ? random_mbox(random, 2, eol) : "");
    std::string after = before + tail;
    StringSource old_data(before), new_data(after);
    Mbox known, whole;
    try {
      known = parse(old_data);
      whole = parse(new_data);
    } catch (const NotMbox&) {
      CHECK(known.messages.empty());  // nothing the tail could spoil
      continue;
    }
    CHECK(summary(parse_after(new_data, known)) == summary(whole));
    CHECK(summary(parse_after(new_data, known, 0)) == summary(whole));  // the tail by two threads
    CHECK(summary(parse_after(old_data, known)) == summary(known));
  }
}

TEST_CASE("Mbox::remove: what a parse of the spool finds once the messages are removed") {
  std::mt19937 random(99);
  for (int round = 0; round < 1000; ++round) {
    std::string eol = round % 3 == 0 ? "\r\n" : "\n";
    std::string data = random_mbox(random, 1 + static_cast<int>(random() % 12), eol, round % 5 == 0);
    // Identical copies, so that deleting one renumbers the others.
    if (round % 2) data += data.substr(data.rfind("From s"));
    // X-UIDL values, some the same, some another's with its "-2", some
    // unique: for the schemes whose ids come from the messages.
    for (std::size_t at = 0; round % 4 && (at = data.find("From s", at)) != std::string::npos;) {
      at = data.find('\n', at) + 1;
      static const char* values[] = {"a", "b", "a-2", "c", "d", "e", "f"};
      std::string value = round % 8 == 1 ? "u" + std::to_string(at) : values[random() % 7];
      if (random() % 4) data.insert(at, "X-UIDL: " + value + eol);
    }
    UidScheme scheme = std::array{UidScheme::popd, UidScheme::x_uidl, UidScheme::dovecot, UidScheme::uw_imap,
                                  UidScheme::popa3d}[round % 5];
    auto parse_string = [scheme](const std::string& text) {
      StringSource source(text);
      return parse(source, scheme);
    };
    Mbox box = parse_string(data);
    std::vector<bool> deleted(box.messages.size());
    std::string kept = data.substr(0, box.messages.front().record_offset);
    // Some rounds take messages off the end only, which renumbers nothing
    // (Mbox::remove skips the numbering) but where X-UIDLs decide.
    bool off_the_end = round % 3 == 2;
    std::size_t first_deleted = random() % deleted.size();
    for (std::size_t i = 0; i < deleted.size(); ++i) {
      deleted[i] = off_the_end ? i >= first_deleted : random() % 3 == 0;
      if (!deleted[i])
        kept += data.substr(box.messages[i].record_offset, box.record_end(i) - box.messages[i].record_offset);
    }
    Mbox expected;
    if (!kept.empty()) expected = parse_string(kept);
    // The UIDVALIDITY of a deleted first message is kept aside (Spool::commit)
    // and used when the spool no longer has one (Spool::open).
    if (needs_validity(scheme) && !expected.validity && (expected.validity = box.validity)) expected.renumber();
    box.remove(deleted);
    CHECK(box.end == kept.size());
    // Removing renumbers (or leaves alone) as numbering afresh does.
    Mbox renumbered = box;
    renumbered.renumber();
    CHECK(summary(box) == summary(renumbered));
    // And as a parse of the spool does, unless a UIDVALIDITY comes to light:
    // a later message's X-IMAPbase (not UW IMAP's doing) now first.
    if (!needs_validity(scheme) || kept.find("X-IMAPbase") == std::string::npos)
      CHECK(summary(box) == summary(expected));
  }
}

TEST_CASE("Mbox::remove of the last message frees an X-UIDL with its -N for an earlier copy") {
  // The second "a" would be "a-2", but the third message has that X-UIDL:
  // the second gets popd's own id. Once the third is gone, "a-2" is free.
  std::string data;
  for (const char* value : {"a", "a", "a-2"})
    data += std::string("From s Mon Jan  1 00:00:00 2024\nX-UIDL: ") + value + "\nSubject: " + value + "\n\nbody\n\n";
  StringSource source(data);
  Mbox box = parse(source, UidScheme::x_uidl);
  REQUIRE(box.messages.size() == 3);
  CHECK(box.uid(0) == "a");
  CHECK(box.uid(1) == box.messages[1].uid());
  CHECK(box.uid(2) == "a-2");
  box.remove({false, false, true});
  CHECK(box.uid(1) == "a-2");
}

TEST_CASE("the separator rule: From after an empty line starts a message") {
  std::string data =
      "From a Mon Jan  1 00:00:00 2024\nSubject: 1\n\nbody\nFrom not a separator\n\n"
      "From b Mon Jan  1 00:00:00 2024\nSubject: 2\n\nlast\n";
  Mbox box = parse_string(data);
  REQUIRE(box.messages.size() == 2);
  CHECK(sent(data, box.messages[0]) == "Subject: 1\r\n\r\nbody\r\nFrom not a separator\r\n");
  CHECK(sent(data, box.messages[1]) == "Subject: 2\r\n\r\nlast\r\n");
  CHECK(box.messages[1].record_offset == data.find("From b"));
  CHECK(box.record_end(0) == box.messages[1].record_offset);
  CHECK(box.record_end(1) == data.size());
}

TEST_CASE("a last message without a final newline is sent with one") {
  std::string data = "From a Mon Jan  1 00:00:00 2024\nSubject: x\n\nno newline";
  Mbox box = parse_string(data);
  REQUIRE(box.messages.size() == 1);
  CHECK(sent(data, box.messages[0]) == "Subject: x\r\n\r\nno newline\r\n");
  CHECK(box.messages[0].size == 26);
}

TEST_CASE("empty and blank-only files") {
  CHECK(parse_string("").messages.empty());
  CHECK(parse_string("\n\n").messages.empty());
  CHECK_THROWS_AS(parse_string("Subject: no From line\n\nbody\n"), NotMbox);
  CHECK_THROWS_AS(parse_string("garbage"), NotMbox);
}

TEST_CASE("mboxcl2: a trusted Content-Length keeps an unquoted From line in its message") {
  std::string body = "line\n\nFrom inside the body\nmore\n";
  std::string data = "From a Mon Jan  1 00:00:00 2024\nContent-Length: " + std::to_string(body.size()) +
                     "\nSubject: cl\n\n" + body + "\nFrom b Mon Jan  1 00:00:00 2024\nSubject: 2\n\nx\n";
  Mbox box = parse_string(data);
  REQUIRE(box.messages.size() == 2);
  std::string first = sent(data, box.messages[0]);
  CHECK(first == "Content-Length: " + std::to_string(body.size()) +
                     "\r\nSubject: cl\r\n\r\nline\r\n\r\nFrom inside the body\r\nmore\r\n");
  CHECK(box.messages[0].size == first.size());
  CHECK(sent(data, box.messages[1]) == "Subject: 2\r\n\r\nx\r\n");

  SUBCASE("at the end of the file") {
    std::string tail = "From a Mon Jan  1 00:00:00 2024\nContent-Length: 10\n\n\nFrom x\nab\n";
    Mbox one = parse_string(tail);
    REQUIRE(one.messages.size() == 1);
    CHECK(sent(tail, one.messages[0]) == "Content-Length: 10\r\n\r\n\r\nFrom x\r\nab\r\n");
  }
  SUBCASE("a wrong Content-Length is ignored") {
    std::string wrong = "From a Mon Jan  1 00:00:00 2024\nContent-Length: 3\n\nbody\n\n"
                        "From b Mon Jan  1 00:00:00 2024\n\nx\n";
    Mbox two = parse_string(wrong);
    REQUIRE(two.messages.size() == 2);
    CHECK(sent(wrong, two.messages[0]) == "Content-Length: 3\r\n\r\nbody\r\n");
  }
  SUBCASE("a Content-Length past the end is ignored") {
    std::string wrong = "From a Mon Jan  1 00:00:00 2024\nContent-Length: 99999\n\nbody\n";
    CHECK(parse_string(wrong).messages.size() == 1);
  }
}

TEST_CASE("metadata headers are hidden and not counted; continuation lines too") {
  std::string data =
      "From a Mon Jan  1 00:00:00 2024\nSubject: s\nX-Keywords: one\n two\nSTATUS: RO\n"
      "X-UID: 5\nTo: t\n\nStatus: in the body stays\n";
  Mbox box = parse_string(data);
  REQUIRE(box.messages.size() == 1);
  std::string got = sent(data, box.messages[0]);
  CHECK(got == "Subject: s\r\nTo: t\r\n\r\nStatus: in the body stays\r\n");
  CHECK(box.messages[0].size == got.size());
}

TEST_CASE("the UW IMAP pseudo-message is hidden") {
  std::string data =
      "From MAILER-DAEMON Mon Jan  1 00:00:00 2024\nDate: x\n"
      "Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\nX-IMAP: 1 2\n\ninternal\n\n"
      "From a Mon Jan  1 00:00:00 2024\nSubject: real\n\nhi\n";
  Mbox box = parse_string(data);
  REQUIRE(box.internal);
  REQUIRE(box.messages.size() == 1);
  CHECK(sent(data, box.messages[0]) == "Subject: real\r\n\r\nhi\r\n");
  CHECK(box.internal->record_offset == 0);
  CHECK(box.messages[0].record_offset == data.find("From a"));
}

TEST_CASE("TOP: header, empty line and n body lines") {
  std::string data = "From a Mon Jan  1 00:00:00 2024\nSubject: s\nStatus: O\n\n1\n2\n3\n";
  Mbox box = parse_string(data);
  CHECK(sent(data, box.messages[0], 0) == "Subject: s\r\n\r\n");
  CHECK(sent(data, box.messages[0], 2) == "Subject: s\r\n\r\n1\r\n2\r\n");
  CHECK(sent(data, box.messages[0], 99) == "Subject: s\r\n\r\n1\r\n2\r\n3\r\n");
}

TEST_CASE("lines longer than the read buffer") {
  std::string huge(3 * 1024 * 1024 + 7, 'y');
  huge[1024 * 1024 - 1] = '\r';  // a bare CR at a buffer boundary stays
  std::string data = "From a Mon Jan  1 00:00:00 2024\r\nSubject: big\r\n\r\n" + huge + "\r\nend\r\n";
  Mbox box = parse_string(data);
  REQUIRE(box.messages.size() == 1);
  std::string got = sent(data, box.messages[0]);
  CHECK(got == "Subject: big\r\n\r\n" + huge + "\r\nend\r\n");
  CHECK(box.messages[0].size == got.size());
}

TEST_CASE("one read buffer serves message after message: large, small, TOP and RETR") {
  // What a buffer held for an earlier message must not show in a later one:
  // large messages of different lengths (lines across the buffer's end, and
  // one longer than the buffer), small ones, TOP between them, and back.
  std::mt19937 random(7);
  std::string data;
  std::vector<std::string> bodies;
  for (std::size_t length : {popd::params::read_block * 2 + 333, std::size_t{40}, popd::params::read_block + 1,
                             std::size_t{3}, popd::params::read_block * 3 / 2}) {
    std::string body;
    while (body.size() < length) {
      std::size_t line = random() % 3 == 0 ? random() % 200 : random() % 90;
      body += (random() % 7 == 0 ? "." : "") + std::string(line, static_cast<char>('a' + random() % 26)) + "\n";
    }
    if (bodies.size() == 2) body += std::string(popd::params::read_block + 5, 'L') + "\n";
    bodies.push_back("Subject: " + std::to_string(bodies.size()) + "\n\n" + body);
    data += "From a Mon Jan  1 00:00:00 2024\n" + bodies.back() + "\n";
  }
  Mbox box = parse_string(data);
  REQUIRE(box.messages.size() == bodies.size());
  ReadBuffer kept;
  for (std::size_t i : {0, 1, 2, 3, 4, 2, 0, 3}) {
    CHECK(sent(data, box.messages[i], std::nullopt, &kept) == expected_form(bodies[i]));
    CHECK(sent(data, box.messages[i], 2, &kept) == sent(data, box.messages[i], 2));
  }
}

TEST_CASE("unique-ids: stable, distinct for identical copies, unaffected by other changes") {
  std::string a = "From x Mon Jan  1 00:00:00 2024\nSubject: a\nMessage-ID: <a@x>\n\nA\n\n";
  std::string b = "From x Mon Jan  1 00:00:01 2024\nSubject: b\nMessage-ID: <b@x>\n\nB\n\n";
  std::string c = "From x Mon Jan  1 00:00:02 2024\nSubject: c\n\nC\n\n";
  auto ids = [](const std::string& data) {
    std::vector<std::string> result;
    for (const Message& m : parse_string(data).messages) result.push_back(m.uid());
    return result;
  };
  auto abc = ids(a + b + c);
  REQUIRE(abc.size() == 3);
  CHECK(std::set<std::string>(abc.begin(), abc.end()).size() == 3);
  for (const auto& id : abc) {
    CHECK(id.size() <= 70);
    for (char ch : id) CHECK((ch > 0x20 && ch < 0x7f));
  }
  CHECK(ids(a + b + c) == abc);                                         // the same across sessions
  CHECK(ids(b + c) == std::vector<std::string>{abc[1], abc[2]});       // a deleted
  CHECK(ids(a + c) == std::vector<std::string>{abc[0], abc[2]});       // b deleted
  CHECK(ids(a + b + c + a).at(0) == abc[0]);                           // new mail
  auto twice = ids(a + a + b);
  CHECK(twice[0] != twice[1]);  // identical copies
  CHECK(twice[0] == abc[0]);
  CHECK(twice[2] == abc[1]);
  // Metadata an IMAP server adds later does not change the id.
  std::string a_seen = "From x Mon Jan  1 00:00:00 2024\nSubject: a\nMessage-ID: <a@x>\nStatus: RO\nX-UID: 3\n\nA\n\n";
  CHECK(ids(a_seen + b).at(0) == abc[0]);
  // CRLF spool: same ids as LF.
  std::string a_crlf = "From x Mon Jan  1 00:00:00 2024\r\nSubject: a\r\nMessage-ID: <a@x>\r\n\r\nA\r\n\r\n";
  CHECK(ids(a_crlf).at(0) == abc[0]);
}

namespace {

// A file cut short after its size was taken: reads stop at `cut`.
class CutSource final : public ByteSource {
 public:
  CutSource(std::string_view data, std::size_t cut) : data_(data), cut_(cut) {}
  std::size_t read_at(std::uint64_t offset, char* buffer, std::size_t size) override {
    StringSource shorter(data_.substr(0, cut_));
    return shorter.read_at(offset, buffer, size);
  }
  std::uint64_t size() const override { return data_.size(); }

 private:
  std::string_view data_;
  std::size_t cut_;
};

}  // namespace

TEST_CASE("a spool cut short while it is parsed is refused, never half-read") {
  // Content-Length leads the parser to read past the body (the From_ line
  // it points at); the cut lands everywhere, on one thread and on two.
  std::string data =
      "From a Mon Jan  1 00:00:00 2024\nContent-Length: 6\n\nbody1\n\n"
      "From b Mon Jan  1 00:00:00 2024\nSubject: two\n\nbody2\n\n"
      "From c Mon Jan  1 00:00:00 2024\nContent-Length: 6\n\nbody3\n";
  for (std::size_t cut = 0; cut < data.size(); ++cut) {
    CAPTURE(cut);
    for (std::uint64_t parallel_from : {std::numeric_limits<std::uint64_t>::max(), std::uint64_t{0}}) {
      CutSource source(data, cut);
      CHECK_THROWS_AS(parse(source, UidScheme::popd, parallel_from), SpoolChanged);
    }
  }
  // A message cut short while it is sent: false, not a short message.
  StringSource whole(data);
  Mbox box = parse(whole);
  REQUIRE(box.messages.size() == 3);
  CutSource cut(data, box.messages[1].content_offset + 3);
  CollectSink sink;
  ReadBuffer buffer;
  CHECK(!send(cut, box.messages[1], std::nullopt, sink, buffer));
  CHECK(send(whole, box.messages[1], std::nullopt, sink, buffer));
}
