// --trace-dir's transcripts (protocol/trace.h, server/trace.h): what is
// redacted, and that a transcript holds every byte both ways.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "params.h"
#include "protocol/trace.h"
#include "server/trace.h"
#include "tests/unit/engine_fixture.h"
#include "tests/unit/files.h"

using namespace popd;
using namespace popd::testing;

TEST_CASE("trace: passwords, APOP digests, AUTH data and SASL responses become ***") {
  CHECK(redacted("PASS secret\r\n", false) == "PASS ***\r\n");
  CHECK(redacted("pass  with spaces \n", false) == "pass ***\n");
  CHECK(redacted("PASS\r\n", false) == "PASS\r\n");
  CHECK(redacted("APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n", false) == "APOP alice ***\r\n");
  CHECK(redacted("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", false) == "AUTH PLAIN ***\r\n");
  CHECK(redacted("auth login YWxpY2U=\r\n", false) == "auth login ***\r\n");
  CHECK(redacted("AUTH PLAIN\r\n", false) == "AUTH PLAIN\r\n");
  CHECK(redacted("AUTH\r\n", false) == "AUTH\r\n");
  CHECK(redacted("AGFsaWNlAHNlY3JldA==\r\n", true) == "***\r\n");
  CHECK(redacted("*\r\n", true) == "*\r\n");
  CHECK(redacted("\r\n", true) == "***\r\n");  // an empty response says something too
  for (const char* kept : {"USER alice\r\n", "RETR 1\n", "top 1 10\r\n", "CAPA\r\n", "\r\n", "QUIT"})
    CHECK(redacted(kept, false) == kept);
}

TEST_CASE("trace: a line ends where the engine ends it; anything not a command of popd's is ***") {
  // A lone CR is inside the line, for the engine as for the trace.
  CHECK(redacted("PASS sec\rret\r\n", false) == "PASS ***\r\n");
  CHECK(redacted("PASS \rsecret\r\n", false) == "PASS ***\r\n");
  CHECK(redacted("YWxpY2U=\rTAIL\r\n", true) == "***\r\n");
  CHECK(redacted("USER alice\rPASS secret\r\n", false) == "USER ***\r\n");
  // The engine reads no verb before a blank: nor does the trace.
  CHECK(redacted(" PASS secret\r\n", false) == "***\r\n");
  // SASL responses pipelined after an AUTH that failed come as commands.
  CHECK(redacted("c2VjcmV0\r\n", false) == "***\r\n");
  CHECK(redacted("AGFsaWNlAHNlY3JldA==\r\n", false) == "***\r\n");
  CHECK(redacted("PASSWORD x\r\n", false) == "***\r\n");
  CHECK(redacted("XTND XMIT\r\n", false) == "***\r\n");
  CHECK(redacted("LAST\r\n", false) == "LAST\r\n");
  // A byte that is not printable ASCII joined to a kept word.
  CHECK(redacted("AUTH PLAIN\rAGFsaWNlAHNlY3JldA==\r\n", false) == "AUTH ***\r\n");
  CHECK(redacted(std::string("AUTH PLAIN\0AGFs\r\n", 17), false) == "AUTH ***\r\n");
  CHECK(redacted("AUTH PLAIN\xa0" "AGFsaWNl\r\n", false) == "AUTH ***\r\n");
  CHECK(redacted("APOP alice\rsecret\r\n", false) == "APOP ***\r\n");
  CHECK(redacted("LIST 1\rc2VjcmV0\r\n", false) == "LIST ***\r\n");
  // A password typed after the name, or past the engine's line limit.
  CHECK(redacted("USER alice secret\r\n", false) == "USER ***\r\n");
  CHECK(redacted("USER alice\tsecret\r\n", false) == "USER ***\r\n");
  CHECK(redacted("USER alice" + std::string(300, ' ') + "\r\n", false) == "USER ***\r\n");
  CHECK(redacted("USER alice  \r\n", false) == "USER alice  \r\n");
}

TEST_CASE("trace: the engine shows every line and reply; the secrets of each login are ***") {
  server::SessionTrace trace;
  Fixture f({}, &trace);  // greeted
  std::string got = "+OK POP3 server ready\r\n";
  std::string plain = b64(std::string("\0alice\0secret", 13));
  std::string sasl_login = b64("secret");
  got += f.talk("USER alice\r\nPASS wrong\r\nAUTH PLAIN " + plain + "\r\nQUIT\r\n");
  Fixture g({}, &trace);
  got += "+OK POP3 server ready\r\n";
  got += g.talk("AUTH LOGIN\r\n" + b64("alice") + "\r\n" + sasl_login + "\r\nRETR 1\r\n");
  std::string expected_lines[] = {"C: USER alice\r\n", "C: PASS ***\r\n", "C: AUTH PLAIN ***\r\n", "C: QUIT\r\n",
                                  "C: AUTH LOGIN\r\n", "C: ***\r\n", "C: ***\r\n", "C: RETR 1\r\n"};
  std::string sent, replies;
  std::string held = trace.held();
  std::string_view text = held;
  while (!text.empty()) {
    std::string_view line = text.substr(0, text.find('\n') + 1);
    text.remove_prefix(line.size());
    (line.starts_with("C: ") ? sent : replies) += line.starts_with("C: ") ? line : line.substr(3);
  }
  std::string expected;
  for (const std::string& line : expected_lines) expected += line;
  CHECK(sent == expected);
  CHECK(replies == got);
  CHECK(trace.held().find("secret") == std::string::npos);
  CHECK(trace.held().find(plain) == std::string::npos);
  CHECK(trace.held().find(sasl_login) == std::string::npos);
}

TEST_CASE("trace: room lent and committed is shown as it is written") {
  server::SessionTrace trace;
  LendingOutput lending(64);
  protocol::TracedOutput traced(lending, trace);
  auto room = traced.room(10);
  REQUIRE(room.size() == 64);
  std::string_view line = "a line\r\nand half";
  std::copy(line.begin(), line.end(), room.begin());
  traced.commit(line.size());
  traced.write(" of one\r\n");
  CHECK(lending.text == "a line\r\nand half of one\r\n");
  CHECK(trace.held() == "S: a line\r\nS: and half of one\r\n");
}

TEST_CASE("trace: what the pre-auth process holds is its latest part, with a note of what went before") {
  server::SessionTrace trace;
  std::string line = "NOOP " + std::string(1000, 'x') + "\r\n";
  for (int i = 0; i < 200; ++i) trace.client(line);
  trace.client("USER alice\r\n");
  trace.server("+OK\r\n");
  std::string held = trace.held();
  CHECK(held.size() <= params::max_preauth_trace + 100);
  CHECK(held.starts_with("# popd: "));
  CHECK(held.find(" bytes of the login phase left out here (params.h)\nC: NOOP ") != std::string::npos);
  CHECK(held.ends_with("C: USER alice\r\nS: +OK\r\n"));
  // Whole lines only: what is left out ends at a line's end.
  std::size_t left_out = std::stoul(held.substr(8));
  CHECK(left_out % ("C: " + line).size() == 0);
}

TEST_CASE("trace: a file gets what was held first, then each whole line at once, and stops at its limit") {
  popd::testing::TempDir dir;
  std::string path = dir.path + "/t";
  popd::sys::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  REQUIRE(fd);
  auto file = [&] {
    std::string text(1 << 20, '\0');
    text.resize(std::max<ssize_t>(0, ::pread(fd.get(), text.data(), text.size(), 0)));
    return text;
  };
  server::SessionTrace trace;
  trace.client("CAPA\r\n");
  trace.attach(fd.get());
  CHECK(file() == "C: CAPA\r\n");
  trace.server("+OK capa");
  CHECK(file() == "C: CAPA\r\n");  // half a line waits
  trace.server("bilities\r\n");
  CHECK(file() == "C: CAPA\r\nS: +OK capabilities\r\n");
  // Past max_trace_bytes from the file's start: a note, then nothing.
  REQUIRE(::ftruncate(fd.get(), params::max_trace_bytes - 10) == 0);
  REQUIRE(::lseek(fd.get(), 0, SEEK_END) == static_cast<off_t>(params::max_trace_bytes - 10));
  server::SessionTrace full(fd.get());
  full.client("STAT\r\n");
  full.server(std::string(100, 'y') + "\r\n");
  full.client("QUIT\r\n");
  struct stat st;
  REQUIRE(::fstat(fd.get(), &st) == 0);
  CHECK(static_cast<std::uint64_t>(st.st_size) < params::max_trace_bytes + 100);
  std::string tail(200, '\0');
  tail.resize(::pread(fd.get(), tail.data(), tail.size(), st.st_size - 200));
  CHECK(tail.ends_with("C: STAT\r\n\n# popd: the transcript stops here, at its limit (params.h)\n"));
}

TEST_CASE("trace: a reply echoes no argument the trace hid (a message number with a control byte)") {
  server::SessionTrace trace;
  Fixture f({}, &trace);
  f.login();
  CHECK(f.talk("LIST x\r\n") == "-ERR Invalid message number: x\r\n");
  CHECK(f.talk("LIST 1\rc2VjcmV0\r\n") == "-ERR Invalid message number\r\n");
  CHECK(f.talk("DELE \x1b[31m\r\n") == "-ERR Invalid message number\r\n");
  CHECK(f.talk("LIST c2VjcmV0cGFzc3dvcmQxMjM0\x01\r\n") == "-ERR Invalid message number\r\n");
  CHECK(trace.held().find("c2VjcmV0") == std::string::npos);
}
