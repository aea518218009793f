// The PROXY protocol header parser and address lists.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "io/proxy.h"

using namespace popd::io;
using Status = ProxyHeader::Status;

namespace {

std::string v2(unsigned char command, unsigned char family, std::string addresses) {
  std::string header("\r\n\r\n\0\r\nQUIT\n", 12);
  header += static_cast<char>(0x20 | command);
  header += static_cast<char>(family);
  header += static_cast<char>(addresses.size() >> 8);
  header += static_cast<char>(addresses.size() & 0xff);
  return header + addresses;
}

std::string bytes(std::initializer_list<int> values) {
  std::string s;
  for (int v : values) s += static_cast<char>(v);
  return s;
}

}  // namespace

TEST_CASE("PROXY version 1: TCP4, TCP6, UNKNOWN; the header's length exactly") {
  std::string line = "PROXY TCP4 198.51.100.7 192.0.2.1 51000 110\r\n";
  ProxyHeader h = parse_proxy_header(line + "USER alice\r\n");
  REQUIRE(h.status == Status::complete);
  CHECK(h.length == line.size());
  CHECK(h.source == "198.51.100.7");
  h = parse_proxy_header("PROXY TCP6 2001:db8::7 2001:db8::1 51000 995\r\n");
  CHECK(h.source == "2001:db8::7");
  h = parse_proxy_header("PROXY TCP6 ::ffff:198.51.100.7 ::ffff:192.0.2.1 1 2\r\n");
  CHECK(h.source == "198.51.100.7");
  h = parse_proxy_header("PROXY UNKNOWN\r\n");
  CHECK((h.status == Status::complete && h.source.empty() && h.length == 15));
  CHECK(parse_proxy_header("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").status == Status::complete);
}

TEST_CASE("PROXY version 1: what is not a header is malformed") {
  for (std::string bad : {"PROXY TCP4 198.51.100.7 192.0.2.1 51000\r\n", "PROXY TCP4 1.2.3 192.0.2.1 1 2\r\n",
                          "PROXY TCP4 198.51.100.7 192.0.2.1 1 65536\r\n", "PROXY TCP4 2001:db8::1 ::1 1 2\r\n",
                          "PROXY TCP5 198.51.100.7 192.0.2.1 1 2\r\n", "PROXY  TCP4 198.51.100.7 192.0.2.1 1 2\r\n",
                          "PROXY TCP4 198.51.100.7 192.0.2.1 01 2\r\n", "USER alice\r\nPASS secret\r\n",
                          "PROXY TCP4 198.51.100.7 192.0.2.1 1 2\n"})
    CHECK_MESSAGE(parse_proxy_header(bad + std::string(120, 'x')).status == Status::malformed, bad);
  CHECK(parse_proxy_header("PROXY " + std::string(200, 'x')).status == Status::malformed);
}

TEST_CASE("PROXY: a partial header asks for no more than it needs") {
  // Nothing past the header may be read: the client's bytes follow.
  CHECK(parse_proxy_header("").length == 15);
  CHECK(parse_proxy_header("PROX").length == 15);
  CHECK(parse_proxy_header("PROXY TCP4 198.").length == 16);
  std::string header = v2(1, 0x11, bytes({198, 51, 100, 7, 192, 0, 2, 1, 0xc7, 0x38, 0, 110}));
  CHECK(parse_proxy_header(header.substr(0, 15)).length == 16);
  CHECK(parse_proxy_header(header.substr(0, 16)).length == header.size());
  CHECK(parse_proxy_header("USER").status == Status::malformed);
}

TEST_CASE("PROXY version 2: PROXY and LOCAL, IPv4 and IPv6, TLVs skipped") {
  std::string tlv = bytes({0x04, 0, 3, 'a', 'b', 'c'});
  std::string header = v2(1, 0x11, bytes({198, 51, 100, 7, 192, 0, 2, 1, 0xc7, 0x38, 0, 110}) + tlv);
  ProxyHeader h = parse_proxy_header(header + "\x16\x03\x01");
  REQUIRE(h.status == Status::complete);
  CHECK(h.length == header.size());
  CHECK(h.source == "198.51.100.7");
  std::string six(36, '\0');
  six[0] = 0x20, six[1] = 0x01, six[2] = 0x0d, six[3] = static_cast<char>(0xb8), six[15] = 7;
  CHECK(parse_proxy_header(v2(1, 0x21, six)).source == "2001:db8::7");
  h = parse_proxy_header(v2(0, 0x00, ""));
  CHECK((h.status == Status::complete && h.source.empty()));
  CHECK(parse_proxy_header(v2(1, 0x31, std::string(216, '\0'))).source.empty());
  CHECK(parse_proxy_header(v2(1, 0x11, bytes({1, 2, 3}))).status == Status::malformed);
  CHECK(parse_proxy_header(v2(2, 0x11, std::string(12, '\0'))).status == Status::malformed);
  std::string version3 = v2(1, 0x11, std::string(12, '\0'));
  version3[12] = 0x31;
  CHECK(parse_proxy_header(version3).status == Status::malformed);
  // Families 0-3 and transports 0-2 only, as the specification says.
  for (unsigned char undefined : {0x13, 0x41, 0xf1, 0x1f, 0x03, 0x40})
    CHECK_MESSAGE(parse_proxy_header(v2(1, undefined, std::string(216, '\0'))).status == Status::malformed,
                  int(undefined));
  CHECK(parse_proxy_header(v2(0, 0x50, "")).status == Status::malformed);
  CHECK(parse_proxy_header(v2(1, 0x12, std::string(12, '\0'))).status == Status::complete);  // DGRAM
}

TEST_CASE("read_proxy_header reads the header and not one byte more") {
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
  std::string header = "PROXY TCP4 198.51.100.7 192.0.2.1 51000 110\r\n";
  std::string after = "\x16\x03\x01 the client's first bytes";
  REQUIRE(::write(pair[1], (header + after).data(), header.size() + after.size()) > 0);
  std::string error;
  auto source = read_proxy_header(pair[0], std::chrono::milliseconds(1000), error);
  REQUIRE(source);
  CHECK(*source == "198.51.100.7");
  char rest[64];
  CHECK(std::string(rest, ::read(pair[0], rest, sizeof rest)) == after);
  // Nothing comes: it gives up in time.
  source = read_proxy_header(pair[0], std::chrono::milliseconds(100), error);
  CHECK(!source);
  CHECK(error.find("in time") != std::string::npos);
  ::close(pair[0]);
  ::close(pair[1]);
}

TEST_CASE("address lists: addresses, networks, IPv4 in IPv6 form") {
  auto list = AddressList::parse("127.0.0.1,::1,10.0.0.0/8,2001:db8::/32,192.0.2.128/25");
  REQUIRE(list);
  CHECK(list->contains("127.0.0.1"));
  CHECK(list->contains("::ffff:127.0.0.1"));
  CHECK(list->contains("::1"));
  CHECK(list->contains("10.200.3.4"));
  CHECK(list->contains("2001:db8:ffff::1"));
  CHECK(list->contains("192.0.2.200"));
  CHECK(!list->contains("192.0.2.100"));
  CHECK(!list->contains("127.0.0.2"));
  CHECK(!list->contains("2001:db9::1"));
  CHECK(!list->contains("local"));
  for (const char* bad : {"", "127.0.0.1,", "10.0.0.0/33", "::1/129", "localhost", "10.0.0.0/x", "1.2.3.4/"})
    CHECK_MESSAGE(!AddressList::parse(bad), bad);
  // Written as IPv4 in IPv6 form, an entry matches the IPv4 peer.
  auto mapped = AddressList::parse("::ffff:198.51.100.7,::ffff:10.0.0.0/104");
  REQUIRE(mapped);
  CHECK(mapped->contains("198.51.100.7"));
  CHECK(mapped->contains("::ffff:198.51.100.7"));
  CHECK(mapped->contains("10.9.8.7"));
  CHECK(!mapped->contains("198.51.100.8"));
  CHECK(!mapped->contains("11.0.0.1"));
  CHECK(canonical_address("::ffff:198.51.100.7") == "198.51.100.7");
  CHECK(canonical_address("2001:db8::7") == "2001:db8::7");
}
