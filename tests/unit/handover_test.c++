// The messages between popd's processes (server/handover.h): what each side
// sends decodes to what was meant, and what a hostile pre-auth process could
// send instead is refused.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "params.h"
#include "server/handover.h"

using namespace popd::server;
using popd::protocol::Login;
namespace handover = popd::server::handover;

TEST_CASE("handover: a login request keeps name and password apart") {
  auto request = handover::decode_login_request(handover::encode_login_request("alice", std::string("pa\0ss", 5)));
  CHECK(request.complete);
  CHECK(request.user == "alice");
  CHECK(request.password == std::string("pa\0ss", 5));
  auto broken = handover::decode_login_request("alice");
  CHECK_FALSE(broken.complete);
  CHECK(broken.user == "alice");
  CHECK(broken.password.empty());
}

TEST_CASE("handover: a reply round-trips, and anything else is refused") {
  Login in{Login::Outcome::in_use, "Mailbox is locked", nullptr, true};
  auto out = handover::decode_reply(handover::encode_reply(in));
  REQUIRE(out);
  CHECK(out->outcome == Login::Outcome::in_use);
  CHECK(out->close);
  CHECK(out->text == "Mailbox is locked");
  CHECK_FALSE(handover::decode_reply(""));
  CHECK_FALSE(handover::decode_reply("x"));
  CHECK_FALSE(handover::decode_reply(std::string(1, static_cast<char>(Login::Outcome::handed_off) + 1) + "0"));
}

TEST_CASE("handover: an end report that does not check out reads as lost") {
  CHECK(handover::is_end_report(handover::encode_end_report(Ending::timeout, true)));
  CHECK_FALSE(handover::is_end_report(handover::encode_login_request("alice", "x")));
  auto report = handover::decode_end_report(handover::encode_end_report(Ending::timeout, true));
  CHECK(report.ending == Ending::timeout);
  CHECK(report.tls);
  CHECK(handover::decode_end_report("\x01\x7f" "1").ending == Ending::lost);
  CHECK(handover::decode_end_report("\x01").ending == Ending::lost);
  CHECK_FALSE(handover::decode_end_report("\x01\x01" "1xx").tls);
}

TEST_CASE("handover: the header names mode, mechanism and pending input") {
  std::string message = handover::encode_handover(false, handover::Mechanism::sasl_plain, "STAT\r\n");
  auto header = handover::decode_header(std::string_view(message).substr(0, handover::header_size));
  REQUIRE(header);
  CHECK_FALSE(header->direct);
  CHECK(header->mechanism == handover::Mechanism::sasl_plain);
  CHECK(header->pending == 6);
  CHECK(message.substr(handover::header_size) == "STAT\r\n");
  CHECK(std::string(handover::mechanism_name(handover::mechanism_of("sasl-plain"))) == "sasl-plain");
  CHECK(std::string(handover::mechanism_name(handover::mechanism_of("user"))) == "user");

  std::string bad_mode = message.substr(0, handover::header_size);
  bad_mode[0] = 'X';
  CHECK_FALSE(handover::decode_header(bad_mode));
  std::string bad_mechanism = message.substr(0, handover::header_size);
  bad_mechanism[1] = 'Q';
  CHECK_FALSE(handover::decode_header(bad_mechanism));
  std::string too_much = handover::encode_handover(true, handover::Mechanism::user,
                                                   std::string(popd::params::max_handover + 1, 'x'));
  CHECK_FALSE(handover::decode_header(std::string_view(too_much).substr(0, handover::header_size)));
  CHECK_FALSE(handover::decode_header("DU"));
}

TEST_CASE("handover: lock answers") {
  auto busy = handover::decode_lock_answer(handover::encode_lock_answer(handover::Tag::lock_busy, "locked"));
  REQUIRE(busy);
  CHECK(busy->tag == handover::Tag::lock_busy);
  CHECK(busy->text == "locked");
  CHECK(handover::decode_lock_answer("H")->tag == handover::Tag::lock_held);
  CHECK_FALSE(handover::decode_lock_answer(""));
  CHECK_FALSE(handover::decode_lock_answer("L"));
}

TEST_CASE("handover: messages and descriptors cross a socket pair whole") {
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pair) == 0);
  popd::sys::UniqueFd a(pair[0]), b(pair[1]);
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  popd::sys::UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  const int passed[] = {write_end.get()};
  REQUIRE(handover::send(a.get(), "hello", passed));
  std::vector<popd::sys::UniqueFd> fds;
  auto got = handover::receive(b.get(), &fds);
  REQUIRE(got);
  CHECK(*got == "hello");
  REQUIRE(fds.size() == 1);
  CHECK(::write(fds[0].get(), "x", 1) == 1);
  char c = 0;
  CHECK(::read(read_end.get(), &c, 1) == 1);
  CHECK(c == 'x');
  // A message larger than the receiver takes is refused, not cut.
  REQUIRE(handover::send(a.get(), std::string(100, 'y')));
  CHECK_FALSE(handover::receive(b.get(), nullptr, 10));
  a.reset();
  CHECK_FALSE(handover::receive(b.get()));
}
