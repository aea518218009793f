// The protocol engine on byte strings, with an in-memory maildrop.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "protocol/engine.h"
#include "protocol/stuffing.h"
#include "tests/unit/engine_fixture.h"

using namespace popd::protocol;
using namespace popd::testing;

TEST_CASE("greeting has no APOP timestamp") {
  MemoryMaildrop drop;
  FakeAuthenticator auth;
  StringOutput out;
  Engine engine(auth, out);
  engine.greet();
  CHECK(out.text == "+OK POP3 server ready\r\n");
  CHECK(out.text.find('<') == std::string::npos);
}

TEST_CASE("CAPA lists the required capabilities in both states") {
  Fixture f;
  for (int round = 0; round < 2; ++round) {
    if (round == 1) f.login();
    std::string reply = f.talk("CAPA\r\n");
    CHECK(reply.starts_with("+OK"));
    for (const char* cap : {"\r\nUSER\r\n", "\r\nTOP\r\n", "\r\nUIDL\r\n", "\r\nPIPELINING\r\n",
                            "\r\nRESP-CODES\r\n", "\r\nAUTH-RESP-CODE\r\n"})
      CHECK(reply.find(cap) != std::string::npos);
    CHECK(reply.ends_with("\r\n.\r\n"));
  }
}

TEST_CASE("--login-delay: CAPA says LOGIN-DELAY in both states; a refusal is [LOGIN-DELAY] and closes") {
  Fixture f(Features{.login_delay = 900});
  CHECK(f.talk("CAPA\r\n").find("\r\nLOGIN-DELAY 900\r\n") != std::string::npos);
  f.login();
  CHECK(f.talk("CAPA\r\n").find("\r\nLOGIN-DELAY 900\r\n") != std::string::npos);
  Fixture none;
  CHECK(none.talk("CAPA\r\n").find("LOGIN-DELAY") == std::string::npos);

  Fixture soon;
  soon.engine.apply_login(Login{Login::Outcome::too_soon, "try again in 5 seconds", nullptr, true});
  CHECK(soon.out.text == "-ERR [LOGIN-DELAY] try again in 5 seconds\r\n");
  CHECK(soon.engine.closed());
}

TEST_CASE("login, STAT, LIST, UIDL") {
  Fixture f;
  f.login();
  CHECK(f.talk("STAT\r\n") == "+OK 2 75\r\n");
  CHECK(f.talk("LIST\r\n") == "+OK scan listing follows\r\n1 35\r\n2 40\r\n.\r\n");
  CHECK(f.talk("LIST 2\r\n") == "+OK 2 40\r\n");
  CHECK(f.talk("UIDL\r\n") == "+OK unique-id listing follows\r\n1 uid1\r\n2 uid2\r\n.\r\n");
  CHECK(f.talk("UIDL 1\r\n") == "+OK 1 uid1\r\n");
}

TEST_CASE("LIST and UIDL of many messages, some deleted: every line, in order, written in blocks") {
  struct CountingOutput final : Output {
    std::string text;
    int writes = 0;
    void write(std::string_view bytes) override {
      text += bytes;
      ++writes;
    }
  };
  MemoryMaildrop drop;
  for (int i = 0; i < 20000; ++i) drop.messages.push_back(std::string(i % 300, 'x') + "\n");
  FakeAuthenticator auth;
  auth.maildrop = &drop;
  CountingOutput out;
  Engine engine{auth, out};
  auto talk = [&](std::string_view bytes) {
    out.text.clear();
    out.writes = 0;
    engine.receive(bytes);
    while (engine.command_waiting()) engine.step();
    return out.text;
  };
  talk("USER alice\r\nPASS secret\r\nDELE 1\r\nDELE 777\r\nDELE 20000\r\n");
  std::string list = "+OK scan listing follows\r\n", uidl = "+OK unique-id listing follows\r\n";
  for (std::size_t i = 0; i < drop.messages.size(); ++i) {
    if (i == 0 || i == 776 || i == 19999) continue;
    list += std::to_string(i + 1) + " " + std::to_string(drop.size(i)) + "\r\n";
    uidl += std::to_string(i + 1) + " " + drop.uid(i) + "\r\n";
  }
  CHECK(talk("LIST\r\n") == list + ".\r\n");
  CHECK(out.writes < 20);
  CHECK(talk("UIDL\r\n") == uidl + ".\r\n");
  CHECK(out.writes < 20);
}

TEST_CASE("RETR byte-stuffs and ends with a dot line; TOP limits body lines") {
  Fixture f;
  f.login();
  CHECK(f.talk("RETR 1\r\n") == "+OK 35 octets\r\nSubject: one\r\n\r\nbody 1\r\n..dot line\r\n.\r\n");
  CHECK(f.talk("TOP 2 1\r\n") == "+OK top of message follows\r\nSubject: two\r\n\r\nline a\r\n.\r\n");
  CHECK(f.talk("TOP 2 0\r\n") == "+OK top of message follows\r\nSubject: two\r\n\r\n.\r\n");
  CHECK(f.talk("TOP 2 x\r\n").starts_with("-ERR"));
  CHECK(f.talk("TOP 2\r\n").starts_with("-ERR"));
}

TEST_CASE("RETR bodies converted in place where the output lends room: the same bytes") {
  std::mt19937 random(11);
  std::string body;
  for (int line = 0; line < 3000; ++line) {
    std::size_t length = line % 97 == 0 ? 150000 : random() % 120;  // a few lines longer than any room
    std::string text(length, 'a' + line % 26);
    if (line % 7 == 0) text.insert(0, ".");
    body += text + (line % 5 == 0 ? "\r\n" : "\n");
  }
  auto retr = [&](Output& out) {
    MemoryMaildrop drop;
    drop.send_blocks = true;
    drop.messages = {"Subject: big\n\n" + body};
    FakeAuthenticator auth;
    auth.maildrop = &drop;
    Engine engine(auth, out);
    engine.receive("USER alice\r\nPASS secret\r\nRETR 1\r\n");
    while (engine.command_waiting()) engine.step();
  };
  StringOutput plain;
  retr(plain);
  REQUIRE(plain.text.find("..aaaa") != std::string::npos);
  for (std::size_t room : {std::size_t(0), std::size_t(300000), std::size_t(1) << 20}) {
    CAPTURE(room);
    LendingOutput lending(room);
    retr(lending);
    CHECK(lending.text == plain.text);
  }
}

TEST_CASE("commands are case-insensitive and bare LF works") {
  Fixture f;
  CHECK(f.talk("user alice\npass secret\n").find("+OK maildrop") != std::string::npos);
  CHECK(f.talk("stat\n") == "+OK 2 75\r\n");
  CHECK(f.talk("NoOp\r\n") == "+OK\r\n");
}

TEST_CASE("bad message numbers get -ERR") {
  Fixture f;
  f.login();
  for (const char* command : {"RETR 0\r\n", "RETR -1\r\n", "RETR x\r\n", "RETR 3\r\n", "RETR 1x\r\n",
                              "RETR 99999999999999999999999\r\n", "RETR +1\r\n", "DELE 0\r\n", "LIST 3\r\n",
                              "UIDL 0\r\n", "TOP 0 1\r\n", "RETR\r\n", "RETR 1 2\r\n"}) {
    CAPTURE(command);
    CHECK(f.talk(command).starts_with("-ERR "));
  }
  CHECK(f.talk("RETR 3\r\n") == "-ERR No such message: 3 (maildrop has 2 messages)\r\n");
  CHECK(f.talk("STAT\r\n") == "+OK 2 75\r\n");  // the session goes on
}

TEST_CASE("DELE hides a message; RSET brings it back; QUIT commits") {
  Fixture f;
  f.login();
  CHECK(f.talk("DELE 1\r\n") == "+OK message 1 deleted\r\n");
  CHECK(f.talk("DELE 1\r\n") == "-ERR Message 1 already deleted\r\n");
  CHECK(f.talk("RETR 1\r\n") == "-ERR Message 1 already deleted\r\n");
  CHECK(f.talk("STAT\r\n") == "+OK 1 40\r\n");
  CHECK(f.talk("LIST\r\n") == "+OK scan listing follows\r\n2 40\r\n.\r\n");
  CHECK(f.talk("UIDL\r\n") == "+OK unique-id listing follows\r\n2 uid2\r\n.\r\n");
  CHECK(f.talk("RSET\r\n") == "+OK maildrop has 2 messages (75 octets)\r\n");
  CHECK(f.talk("STAT\r\n") == "+OK 2 75\r\n");
  f.talk("DELE 2\r\n");
  CHECK(f.talk("QUIT\r\n") == "+OK popd signing off (1 messages deleted)\r\n");
  CHECK(f.drop.committed == std::vector<bool>{false, true});
  CHECK(f.engine.closed());
  CHECK(f.engine.stats().deleted_messages == 1);
}

TEST_CASE("the figures of the session-end log line") {
  Fixture f;
  f.login();
  f.talk("RETR 1\r\nTOP 2 1\r\nTOP 9 1\r\nDELE 1\r\nQUIT\r\n");
  SessionStats stats = f.engine.stats();
  CHECK(stats.auth == "user");
  CHECK(stats.retrieved_messages == 1);
  CHECK(stats.top_messages == 1);
  CHECK(stats.deleted_messages == 1);
  CHECK(stats.kept_messages == 1);
  CHECK(stats.kept_bytes == 40);
  CHECK(!stats.commit_failed);

  Fixture plain;  // AUTH PLAIN; a commit that fails keeps everything
  plain.drop.fail_commit = true;
  plain.talk("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nDELE 2\r\nQUIT\r\n");
  stats = plain.engine.stats();
  CHECK(stats.auth == "sasl-plain");
  CHECK(stats.commit_failed);
  CHECK(stats.kept_messages == 2);
  CHECK(stats.kept_bytes == 75);

  Fixture dropped;  // no QUIT: nothing committed
  dropped.login();
  dropped.talk("DELE 1\r\n");
  CHECK(dropped.engine.stats().kept_messages == 2);

  Fixture guessing;
  guessing.talk("USER alice\r\nPASS a\r\nUSER alice\r\nPASS b\r\nUSER alice\r\nPASS c\r\n");
  stats = guessing.engine.stats();
  CHECK(stats.too_many_failures);
  CHECK(stats.auth.empty());
  CHECK(stats.kept_messages == 0);
}

TEST_CASE("QUIT without DELE commits with nothing marked; a failed commit is -ERR [SYS/TEMP]") {
  Fixture f;
  f.login();
  std::size_t count = f.drop.messages.size();
  CHECK(f.talk("QUIT\r\n") == "+OK popd signing off (0 messages deleted)\r\n");
  CHECK(f.drop.committed == std::vector<bool>(count, false));  // a Maildir marks what RETR sent seen then

  Fixture g;
  g.login();
  g.drop.fail_commit = true;
  g.talk("DELE 1\r\n");
  CHECK(g.talk("QUIT\r\n") == "-ERR [SYS/TEMP] Deletions not committed: disk full\r\n");
  CHECK(g.engine.closed());
  CHECK(g.engine.stats().deleted_messages == 0);
}

TEST_CASE("a timeout or a closed connection commits nothing") {
  Fixture f;
  f.login();
  f.talk("DELE 1\r\n");
  f.engine.abort("Idle timeout, closing connection");
  CHECK(f.out.text.find("-ERR") != std::string::npos);
  CHECK(f.engine.closed());
  CHECK(f.drop.committed.empty());
}

TEST_CASE("AUTHORIZATION state: order and failures") {
  Fixture f;
  CHECK(f.talk("STAT\r\n").starts_with("-ERR"));
  CHECK(f.talk("PASS secret\r\n") == "-ERR USER first\r\n");
  CHECK(f.auth.calls == 0);
  CHECK(f.talk("USER\r\n").starts_with("-ERR"));
  CHECK(f.talk("USER a/b\r\n").starts_with("-ERR"));
  CHECK(f.talk("USER alice\r\n") == "+OK Send your password\r\n");
  CHECK(f.talk("PASS wrong\r\n") == "-ERR [AUTH] Authentication failed\r\n");
  CHECK(f.talk("PASS secret\r\n") == "-ERR USER first\r\n");  // USER again after a failure
  f.talk("USER bob\r\n");
  CHECK(f.talk("PASS secret\r\n") == "-ERR [AUTH] Authentication failed\r\n");
  CHECK(!f.engine.closed());
  f.talk("USER alice\r\n");
  CHECK(f.talk("PASS nope\r\n").starts_with("-ERR [AUTH] Authentication failed; too many failures"));
  CHECK(f.engine.closed());
  CHECK(f.talk("USER alice\r\nPASS secret\r\n").empty());
}

TEST_CASE("the password is the rest of the line and may hold spaces") {
  Fixture f;
  f.talk("USER alice\r\n");
  f.talk("PASS se cret \r\n");
  CHECK(f.auth.last_password == "se cret ");
}

TEST_CASE("response codes for refused logins") {
  using O = Login::Outcome;
  struct Case {
    O outcome;
    const char* code;
  };
  for (Case c : {Case{O::forbidden, "-ERR [SYS/PERM] nope"}, Case{O::in_use, "-ERR [IN-USE] nope"},
                 Case{O::temporary, "-ERR [SYS/TEMP] nope"}}) {
    Fixture f;
    f.auth.outcome_for_good_password = c.outcome;
    CHECK(f.talk("USER alice\r\nPASS secret\r\n") == std::string("+OK Send your password\r\n") + c.code + "\r\n");
    CHECK(f.engine.closed());
  }
}

TEST_CASE("trouble in authentication counts toward the failure limit") {
  Fixture f;
  f.auth.outcome_for_good_password = Login::Outcome::temporary;
  f.auth.refusal_closes = false;
  CHECK(f.talk("USER alice\r\nPASS secret\r\nUSER alice\r\nPASS secret\r\n") ==
        "+OK Send your password\r\n-ERR [SYS/TEMP] nope\r\n+OK Send your password\r\n-ERR [SYS/TEMP] nope\r\n");
  CHECK(!f.engine.closed());
  CHECK(f.talk("USER alice\r\nPASS wrong\r\n") ==
        "+OK Send your password\r\n-ERR [AUTH] Authentication failed; too many failures, closing connection\r\n");
  CHECK(f.engine.closed());
}

TEST_CASE("over-long lines get -ERR and the session goes on") {
  Fixture f;
  std::string long_line = "USER " + std::string(300, 'a') + "\r\n";
  CHECK(f.talk(long_line) == "-ERR Command line too long\r\n");
  // Sent in pieces, and far longer than any buffer should hold.
  f.out.text.clear();
  for (int i = 0; i < 1000; ++i) f.engine.receive(std::string(1000, 'x'));
  f.engine.receive("\r\nNOOP\r\n");
  while (f.engine.command_waiting()) f.engine.step();
  CHECK(f.out.text == "-ERR Command line too long\r\n-ERR Not logged in yet: USER and PASS first\r\n");
  CHECK(f.engine.pending_input().size() < 300);
  // 255 octets with CRLF is still fine.
  std::string exact = "NOOP" + std::string(249, ' ') + "\r\n";
  REQUIRE(exact.size() == 255);
  CHECK(f.talk(exact) == "-ERR Not logged in yet: USER and PASS first\r\n");
}

TEST_CASE("pipelined commands are answered in order") {
  Fixture f;
  std::string reply = f.talk("USER alice\r\nPASS secret\r\nSTAT\r\nDELE 1\r\nSTAT\r\nQUIT\r\n");
  CHECK(reply ==
        "+OK Send your password\r\n+OK maildrop has 2 messages (75 octets)\r\n+OK 2 75\r\n"
        "+OK message 1 deleted\r\n+OK 1 40\r\n+OK popd signing off (1 messages deleted)\r\n");
}

TEST_CASE("a command split across reads waits for its end") {
  Fixture f;
  f.engine.receive("NO");
  CHECK(!f.engine.command_waiting());
  f.engine.receive("OP\r");
  CHECK(!f.engine.command_waiting());
  f.engine.receive("\n");
  CHECK(f.engine.command_waiting());
}

TEST_CASE("a message that cannot be read ends the session without commit") {
  Fixture f;
  f.login();
  f.talk("DELE 2\r\n");
  f.drop.fail_send = true;
  f.talk("RETR 1\r\n");
  CHECK(f.engine.closed());
  CHECK(f.drop.committed.empty());
}

TEST_CASE("a message not where the index said: -ERR [SYS/TEMP] before any reply, no commit") {
  for (const char* command : {"RETR 1\r\n", "TOP 1 0\r\n"}) {
    Fixture f;
    f.login();
    f.talk("DELE 2\r\n");
    f.drop.moved = true;
    CHECK(f.talk(command) == "-ERR [SYS/TEMP] Mailbox changed since it was indexed, try again\r\n");
    CHECK(f.engine.closed());
    CHECK(f.drop.committed.empty());
  }
}

TEST_CASE("NUL bytes and unknown commands") {
  Fixture f;
  CHECK(f.talk(std::string("USER al\0ice\r\n", 13)).starts_with("-ERR"));
  CHECK(f.talk("XYZZY\r\n") == "-ERR Unknown command\r\n");
  f.login();
  CHECK(f.talk("USER alice\r\n").starts_with("-ERR"));
  CHECK(f.talk("STAT x\r\n").starts_with("-ERR"));
}

TEST_CASE("AUTH PLAIN with an initial response, and as a continuation") {
  using namespace std::string_literals;
  Fixture f;
  CHECK(f.talk("AUTH\r\n") == "+OK Supported mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n");
  CHECK(f.talk("AUTH PLAIN " + b64("\0alice\0secret"s) + "\r\n").starts_with("+OK maildrop has 2"));

  Fixture g;
  CHECK(g.talk("AUTH PLAIN\r\n") == "+ \r\n");
  CHECK(g.talk(b64("alice\0alice\0secret"s) + "\r\n").starts_with("+OK maildrop has 2"));
}

TEST_CASE("AUTH PLAIN: cancel, bad base64, bad authzid, wrong password, unknown mechanism") {
  using namespace std::string_literals;
  Fixture f;
  CHECK(f.talk("AUTH PLAIN\r\n*\r\n") == "+ \r\n-ERR Authentication cancelled\r\n");
  CHECK(f.talk("AUTH PLAIN !!!!\r\n") == "-ERR Invalid base64 in the SASL response\r\n");
  CHECK(f.talk("AUTH PLAIN " + b64("alice\0secret"s) + "\r\n") == "-ERR Malformed PLAIN response\r\n");
  CHECK(f.talk("AUTH CRAM-MD5\r\n") == "-ERR Unsupported authentication mechanism\r\n");
  CHECK(f.auth.calls == 0);
  CHECK(f.talk("AUTH PLAIN " + b64("bob\0alice\0secret"s) + "\r\n").starts_with("-ERR [AUTH] Authorization"));
  CHECK(f.auth.calls == 0);
  CHECK(f.talk("AUTH PLAIN " + b64("\0alice\0wrong"s) + "\r\n") == "-ERR [AUTH] Authentication failed\r\n");
  // Third failure, shared with USER/PASS: closed.
  CHECK(f.talk("USER alice\r\nPASS nope\r\n").find("too many failures") != std::string::npos);
  CHECK(f.engine.closed());
}

TEST_CASE("AUTH LOGIN as Outlook sends it: a name and a password, each answering a base64 prompt") {
  Fixture f;
  CHECK(f.talk("CAPA\r\n").find("\r\nSASL PLAIN LOGIN\r\n") != std::string::npos);
  CHECK(f.talk("auth login\r\n") == "+ VXNlcm5hbWU6\r\n");  // "Username:"
  CHECK(f.talk(b64("alice") + "\r\n") == "+ UGFzc3dvcmQ6\r\n");  // "Password:"
  CHECK(f.auth.calls == 0);
  CHECK(f.talk(b64("secret") + "\r\n").starts_with("+OK maildrop has 2"));
  CHECK(f.auth.last_password == "secret");
  f.talk("QUIT\r\n");
  CHECK(f.engine.stats().auth == "sasl-login");

  Fixture initial;  // the name as the initial response
  CHECK(initial.talk("AUTH LOGIN " + b64("alice") + "\r\n") == "+ UGFzc3dvcmQ6\r\n");
  CHECK(initial.talk(b64("secret") + "\r\n").starts_with("+OK maildrop has 2"));
}

TEST_CASE("AUTH LOGIN: cancel at each prompt, bad base64, a bad name, wrong passwords count as failures") {
  using namespace std::string_literals;
  Fixture f;
  CHECK(f.talk("AUTH LOGIN\r\n*\r\n") == "+ VXNlcm5hbWU6\r\n-ERR Authentication cancelled\r\n");
  CHECK(f.talk("AUTH LOGIN\r\n" + b64("alice") + "\r\n*\r\n") ==
        "+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n-ERR Authentication cancelled\r\n");
  CHECK(f.talk("AUTH LOGIN !!!!\r\n") == "-ERR Invalid base64 in the SASL response\r\n");
  CHECK(f.talk("AUTH LOGIN " + b64("a/b") + "\r\n") == "-ERR [AUTH] Invalid user name\r\n");
  CHECK(f.talk("AUTH LOGIN " + b64("alice\0x"s) + "\r\n") == "-ERR [AUTH] Invalid user name\r\n");
  CHECK(f.talk("AUTH LOGIN x y\r\n") == "-ERR Syntax: AUTH LOGIN [initial-response]\r\n");
  CHECK(f.auth.calls == 0);
  CHECK(f.talk("NOOP\r\n") == "-ERR Not logged in yet: USER and PASS first\r\n");  // a command again
  for (int i = 0; i < 2; ++i)
    CHECK(f.talk("AUTH LOGIN " + b64("alice") + "\r\n" + b64("wrong") + "\r\n") ==
          "+ UGFzc3dvcmQ6\r\n-ERR [AUTH] Authentication failed\r\n");
  CHECK(f.talk("AUTH LOGIN " + b64("alice") + "\r\n" + b64("wrong") + "\r\n").find("too many failures") !=
        std::string::npos);
  CHECK(f.engine.closed());
}

TEST_CASE("--workaround outlook-no-nuls: a NUL goes out as 0x80, by every path a message takes") {
  using namespace std::string_literals;
  const std::string message = "Subject: n\0l\n\nbody \0\0\n.x\0\n"s;
  for (int path = 0; path < 3; ++path) {
    CAPTURE(path);
    Fixture off, on(Features{.outlook_no_nuls = true});
    for (Fixture* f : {&off, &on}) {
      f->drop.messages = {message};
      f->drop.send_blocks = path == 1;
      f->drop.send_whole = path == 2;
      f->login();
    }
    CHECK(off.talk("RETR 1\r\n").ends_with("\r\nSubject: n\0l\r\n\r\nbody \0\0\r\n..x\0\r\n.\r\n"s));
    CHECK(on.talk("RETR 1\r\n").ends_with("\r\nSubject: n\x80l\r\n\r\nbody \x80\x80\r\n..x\x80\r\n.\r\n"s));
  }
}

TEST_CASE("--workaround oe-ns-eoh: a header without its empty line gets one, and only then") {
  for (bool whole : {false, true}) {
    CAPTURE(whole);
    Fixture off, on(Features{.oe_ns_eoh = true});
    for (Fixture* f : {&off, &on}) {
      f->drop.messages = {"Subject: only a header\nX-A: b\n", "Subject: s\n\nbody\n", "Subject: s\r\n\r\nbody\r\n"};
      f->drop.send_whole = whole;
      f->login();
    }
    CHECK(off.talk("RETR 1\r\n").ends_with("\r\nX-A: b\r\n.\r\n"));
    CHECK(on.talk("RETR 1\r\n").ends_with("\r\nX-A: b\r\n\r\n.\r\n"));
    CHECK(on.talk("TOP 1 0\r\n").ends_with("\r\nX-A: b\r\n\r\n.\r\n"));
    CHECK(on.talk("RETR 2\r\n").ends_with("\r\nSubject: s\r\n\r\nbody\r\n.\r\n"));
    CHECK(on.talk("RETR 3\r\n") == off.talk("RETR 3\r\n"));
    CHECK(on.talk("TOP 2 0\r\n").ends_with("\r\nSubject: s\r\n\r\n.\r\n"));
  }
}

TEST_CASE("a SASL response may be longer than a command line, within its own limit") {
  using namespace std::string_literals;
  Fixture f;
  std::string response = b64("\0alice\0"s + std::string(600, 'p'));
  REQUIRE(response.size() > 255);
  CHECK(f.talk("AUTH PLAIN\r\n" + response + "\r\n") == "+ \r\n-ERR [AUTH] Authentication failed\r\n");
  CHECK(f.auth.last_password == std::string(600, 'p'));
  CHECK(f.talk("AUTH PLAIN\r\n" + std::string(3000, 'A') + "\r\n") == "+ \r\n-ERR Command line too long\r\n");
}

TEST_CASE("STLS: offered once, only before login; nothing after it is executed before the handshake") {
  MemoryMaildrop drop;
  FakeAuthenticator auth;
  auth.maildrop = &drop;
  StringOutput out;
  Engine engine(auth, out, Features{.stls = true});
  auto talk = [&](std::string_view bytes) {
    out.text.clear();
    engine.receive(bytes);
    while (engine.command_waiting()) engine.step();
    return out.text;
  };
  CHECK(talk("CAPA\r\n").find("\r\nSTLS\r\n") != std::string::npos);
  CHECK(talk("STLS\r\nUSER alice\r\nPASS secret\r\n") == "+OK Begin TLS negotiation\r\n");
  CHECK(!engine.command_waiting());
  CHECK(engine.take_tls_request());
  CHECK(!engine.take_tls_request());
  engine.discard_pending_input();
  engine.tls_started();
  CHECK(talk("") == "");
  CHECK(auth.calls == 0);  // the injected USER/PASS were never run
  CHECK(talk("CAPA\r\n").find("STLS") == std::string::npos);
  CHECK(talk("STLS\r\n") == "-ERR TLS is already active\r\n");
  CHECK(talk("USER alice\r\nPASS secret\r\n").find("+OK maildrop") != std::string::npos);
  CHECK(talk("STLS\r\n").starts_with("-ERR"));

  Fixture plain;  // no certificate: no STLS
  CHECK(plain.talk("CAPA\r\n").find("STLS") == std::string::npos);
  CHECK(plain.talk("STLS\r\n") == "-ERR STLS is not available\r\n");
}

TEST_CASE("require-tls: no USER, PASS or AUTH before TLS, and CAPA does not offer them") {
  MemoryMaildrop drop;
  FakeAuthenticator auth;
  auth.maildrop = &drop;
  StringOutput out;
  Engine engine(auth, out, Features{.stls = true, .require_tls = true});
  auto talk = [&](std::string_view bytes) {
    out.text.clear();
    engine.receive(bytes);
    while (engine.command_waiting()) engine.step();
    return out.text;
  };
  std::string capa = talk("CAPA\r\n");
  CHECK(capa.find("USER") == std::string::npos);
  CHECK(capa.find("SASL") == std::string::npos);
  CHECK(capa.find("STLS") != std::string::npos);
  CHECK(talk("USER alice\r\n").starts_with("-ERR [AUTH] TLS is required"));
  CHECK(talk("PASS secret\r\n").starts_with("-ERR [AUTH] TLS is required"));
  CHECK(talk("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n").starts_with("-ERR [AUTH] TLS is required"));
  CHECK(talk("AUTH LOGIN\r\n").starts_with("-ERR [AUTH] TLS is required"));
  CHECK(auth.calls == 0);
  talk("STLS\r\n");
  engine.take_tls_request();
  engine.tls_started();
  CHECK(talk("CAPA\r\n").find("USER") != std::string::npos);
  CHECK(talk("USER alice\r\nPASS secret\r\n").find("+OK maildrop") != std::string::npos);
}

TEST_CASE("stuff_lines: CRLF line ends and dot-stuffing, vector path and tail alike") {
  // The plain rule, line by line.
  auto reference = [](std::string_view block) {
    std::string out;
    while (!block.empty()) {
      auto newline = block.find('\n');
      std::string_view line = block.substr(0, newline);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!line.empty() && line.front() == '.') out += '.';
      out += line;
      out += "\r\n";
      block.remove_prefix(newline + 1);
    }
    return out;
  };
  // Blocks up to 3,000 bytes, so that the 64-byte masks of the AVX2 way
  // meet lines of every length (past its 128-byte copy too), CRLF split
  // across two masks, and the tail it leaves to the SSE2 way.
  std::mt19937 random(5);
  const char alphabet[] = {'a', '.', '\r', 'b', 'F', ' '};
  const unsigned line_feed_odds[] = {3, 8, 60, 200};
  using Stuffer = std::size_t (*)(std::string_view, char*);
  for (Stuffer stuff : {popd::protocol::detail::stuff_lines_sse2, popd::protocol::detail::stuff_lines_avx2,
                        popd::protocol::stuff_lines}) {
    // Not on a processor without AVX2: there it would stop at the first instruction.
    if (stuff == popd::protocol::detail::stuff_lines_avx2 && !popd::protocol::detail::have_avx2()) continue;
    for (int round = 0; round < 4000; ++round) {
      std::string block;
      std::size_t length = random() % (round % 2 ? 200 : 3000);
      unsigned odds = line_feed_odds[round / 2 % 4];
      for (std::size_t i = 0; i < length; ++i) {
        // Long runs without a line feed as well as short lines.
        block += random() % odds == 0 ? '\n' : alphabet[random() % (round % 3 ? 6 : 3)];
      }
      block += '\n';
      std::string out(popd::protocol::stuffed_capacity(block.size()), '\0');
      out.resize(stuff(block, out.data()));
      REQUIRE(out == reference(block));
    }
  }
}
