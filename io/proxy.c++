#include "io/proxy.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "sys/file.h"

namespace popd::io {
namespace {

using Status = ProxyHeader::Status;

// Version 1: "PROXY TCP4|TCP6 source destination sport dport\r\n", or
// "PROXY UNKNOWN ...\r\n"; 107 bytes at most, 15 at least.
constexpr std::string_view v1_prefix = "PROXY ";
constexpr std::size_t v1_longest = 107, shortest = 15;
// Version 2: this signature, version and command, family and transport,
// the length of what follows (big-endian), then the addresses and TLVs.
constexpr std::string_view v2_signature{"\r\n\r\n\0\r\nQUIT\n", 12};
constexpr std::size_t v2_fixed = 16;

ProxyHeader malformed(std::string error) { return {Status::malformed, 0, {}, std::move(error)}; }
ProxyHeader need(std::size_t length) { return {Status::incomplete, length, {}, {}}; }

// An address of `family` as text, IPv4-mapped IPv6 as IPv4.
std::string address_text(int family, const void* bytes) {
  if (family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(static_cast<const in6_addr*>(bytes))) {
    family = AF_INET;
    bytes = static_cast<const unsigned char*>(bytes) + 12;
  }
  char text[INET6_ADDRSTRLEN] = {};
  return ::inet_ntop(family, bytes, text, sizeof text) ? text : "";
}

bool valid_port(std::string_view text) {
  unsigned port = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), port);
  return !text.empty() && error == std::errc() && end == text.data() + text.size() && port <= 65535 &&
         (text.size() == 1 || text.front() != '0');
}

ProxyHeader parse_v1(std::string_view data) {
  auto end = data.find("\r\n");
  if (end == std::string_view::npos)
    return data.size() >= v1_longest ? malformed("version 1 header without its line end") : need(data.size() + 1);
  if (end + 2 > v1_longest) return malformed("version 1 header too long");
  std::string_view line = data.substr(v1_prefix.size(), end - v1_prefix.size());
  std::vector<std::string_view> words;
  for (std::size_t at = 0; at <= line.size();) {
    auto space = line.find(' ', at);
    if (space == std::string_view::npos) space = line.size();
    words.push_back(line.substr(at, space - at));
    at = space + 1;
  }
  ProxyHeader header{Status::complete, end + 2, {}, {}};
  if (words[0] == "UNKNOWN") return header;  // the proxy could not tell: anything may follow
  int family = words[0] == "TCP4" ? AF_INET : words[0] == "TCP6" ? AF_INET6 : 0;
  if (family == 0 || words.size() != 5) return malformed("version 1 header is not TCP4, TCP6 or UNKNOWN");
  unsigned char source[16], destination[16];
  std::string source_text(words[1]), destination_text(words[2]);
  if (::inet_pton(family, source_text.c_str(), source) != 1 ||
      ::inet_pton(family, destination_text.c_str(), destination) != 1 || !valid_port(words[3]) ||
      !valid_port(words[4]))
    return malformed("version 1 header with a bad address or port");
  header.source = address_text(family, source);
  return header;
}

ProxyHeader parse_v2(std::string_view data) {
  if (data.size() < v2_fixed) return need(v2_fixed);
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(data[i]); };
  std::size_t length = v2_fixed + (std::size_t{byte(14)} << 8 | byte(15));
  if ((byte(12) >> 4) != 2) return malformed("version 2 signature with another version");
  unsigned command = byte(12) & 15, family = byte(13) >> 4, transport = byte(13) & 15;
  if (command > 1) return malformed("version 2 header with an unknown command");
  // The specification defines families 0 to 3 (UNSPEC, INET, INET6, UNIX)
  // and transports 0 to 2 (UNSPEC, STREAM, DGRAM); a receiver must reject
  // any other.
  if (family > 3 || transport > 2) return malformed("version 2 header with an undefined family or transport");
  if (data.size() < length) return need(length);
  ProxyHeader header{Status::complete, length, {}, {}};
  if (command == 0) return header;  // LOCAL: the proxy's own connection, a health check
  std::size_t needed = family == 1 ? 12 : family == 2 ? 36 : family == 3 ? 216 : 0;
  if (length - v2_fixed < needed) return malformed("version 2 header too short for its addresses");
  if (family == 1) header.source = address_text(AF_INET, data.data() + v2_fixed);
  if (family == 2) header.source = address_text(AF_INET6, data.data() + v2_fixed);
  return header;  // UNSPEC and UNIX name no client address
}

}  // namespace

ProxyHeader parse_proxy_header(std::string_view data) {
  std::string_view v1 = v1_prefix.substr(0, std::min(data.size(), v1_prefix.size()));
  std::string_view v2 = v2_signature.substr(0, std::min(data.size(), v2_signature.size()));
  if (data.size() < shortest && (data.starts_with(v1) || data.starts_with(v2))) return need(shortest);
  if (data.starts_with(v1_prefix)) return parse_v1(data);
  if (data.starts_with(v2_signature)) return parse_v2(data);
  return malformed("no PROXY protocol header");
}

std::optional<std::string> read_proxy_header(int fd, std::chrono::milliseconds wait, std::string& error) {
  auto deadline = std::chrono::steady_clock::now() + wait;
  std::string data;
  for (;;) {
    ProxyHeader header = parse_proxy_header(data);
    if (header.status == Status::complete) return header.source;
    if (header.status == Status::malformed) {
      error = header.error;
      return std::nullopt;
    }
    if (!sys::wait_readable(fd, deadline)) {
      error = data.empty() ? "no PROXY protocol header in time" : "PROXY protocol header cut short";
      return std::nullopt;
    }
    // Only what the header still needs, so that nothing after it is read.
    std::size_t have = data.size();
    data.resize(header.length);
    ssize_t n = ::recv(fd, data.data() + have, data.size() - have, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      error = "connection closed before a complete PROXY protocol header";
      return std::nullopt;
    }
    data.resize(have + std::max<ssize_t>(n, 0));
  }
}

std::optional<AddressList> AddressList::parse(std::string_view list) {
  AddressList result;
  for (std::size_t at = 0; at <= list.size();) {
    auto comma = list.find(',', at);
    if (comma == std::string_view::npos) comma = list.size();
    std::string_view item = list.substr(at, comma - at);
    at = comma + 1;
    auto slash = item.find('/');
    std::string address(item.substr(0, slash));
    Network network{};
    network.family = address.find(':') == std::string::npos ? AF_INET : AF_INET6;
    if (::inet_pton(network.family, address.c_str(), network.bytes) != 1) return std::nullopt;
    unsigned most = network.family == AF_INET ? 32 : 128;
    network.bits = most;
    if (slash != std::string_view::npos) {
      std::string_view bits = item.substr(slash + 1);
      auto [end, error] = std::from_chars(bits.data(), bits.data() + bits.size(), network.bits);
      if (bits.empty() || error != std::errc() || end != bits.data() + bits.size() || network.bits > most)
        return std::nullopt;
    }
    // ::ffff:a.b.c.d is how a dual-stack socket names an IPv4 peer, and
    // peers are compared in IPv4 form (canonical_address): so is it.
    if (network.family == AF_INET6 && network.bits >= 96 &&
        IN6_IS_ADDR_V4MAPPED(reinterpret_cast<const in6_addr*>(network.bytes))) {
      network.family = AF_INET;
      std::memmove(network.bytes, network.bytes + 12, 4);
      network.bits -= 96;
    }
    result.networks_.push_back(network);
  }
  return result;
}

bool AddressList::contains(std::string_view address) const {
  std::string text = canonical_address(address);
  int family = text.find(':') == std::string::npos ? AF_INET : AF_INET6;
  unsigned char bytes[16];
  if (::inet_pton(family, text.c_str(), bytes) != 1) return false;
  for (const Network& network : networks_) {
    if (network.family != family) continue;
    unsigned whole = network.bits / 8, rest = network.bits % 8;
    if (std::memcmp(bytes, network.bytes, whole) != 0) continue;
    unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
    if (rest == 0 || ((bytes[whole] ^ network.bytes[whole]) & mask) == 0) return true;
  }
  return false;
}

std::string canonical_address(std::string_view address) {
  std::string text(address);
  in6_addr v6;
  if (text.find(':') != std::string::npos && ::inet_pton(AF_INET6, text.c_str(), &v6) == 1)
    return address_text(AF_INET6, &v6);
  return text;
}

}  // namespace popd::io
