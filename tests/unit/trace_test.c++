// --trace-dir's transcripts (protocol/trace.h, server/trace.h): what is
// redacted, and that a transcript holds every byte both ways.
#include <doctest/doctest.h>

#include <string>

#include "params.h"
#include "protocol/trace.h"
#include "server/trace.h"
#include "tests/unit/engine_fixture.h"

using namespace popd;
using namespace popd::test;

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
  for (const char* kept : {"USER alice\r\n", "RETR 1\n", "PASSWORD x\r\n", "CAPA\r\n", "\r\n"})
    CHECK(redacted(kept, false) == kept);
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
  std::string_view text = trace.held();
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

TEST_CASE("trace: what the pre-auth process holds stops at its limit, with a note") {
  server::SessionTrace trace;
  std::string line(1000, 'x');
  line += "\r\n";
  for (int i = 0; i < 200; ++i) trace.client("NOOP " + line);
  CHECK(trace.held().size() <= params::max_preauth_trace + 100);
  CHECK(trace.held().ends_with("# popd: the transcript stops here, at its limit (params.h)\n"));
  trace.server("+OK\r\n");
  CHECK(trace.held().ends_with("(params.h)\n"));
}
