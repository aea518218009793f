// The PROXY protocol of HAProxy (versions 1 and 2): a load balancer in
// front of popd sends the client's address in a header before any byte of
// the client's. See popd.8, --proxy-protocol.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace popd::io {

struct ProxyHeader {
  enum class Status { complete, incomplete, malformed };
  Status status = Status::incomplete;
  // complete: the bytes the header takes; incomplete: how many are needed
  // at least before it can say more.
  std::size_t length = 0;
  // The client's address; empty where the header names none (a LOCAL
  // connection of the proxy's own, or UNKNOWN).
  std::string source;
  std::string error;  // malformed: why
};

// Reads a header from the start of `data`, which may hold only part of it.
ProxyHeader parse_proxy_header(std::string_view data);

// Reads the header from the socket `fd` within `wait`, and not one byte of
// what follows it. The client's address, "" if the header names none, or
// nullopt with `error`.
std::optional<std::string> read_proxy_header(int fd, std::chrono::milliseconds wait, std::string& error);

// Addresses and networks ("192.0.2.1", "10.0.0.0/8", "::1", "2001:db8::/32")
// in a comma-separated list. An IPv4 address in IPv6 form (::ffff:a.b.c.d)
// counts as the IPv4 address.
class AddressList {
 public:
  static std::optional<AddressList> parse(std::string_view list);
  bool contains(std::string_view address) const;

 private:
  struct Network {
    int family;
    unsigned char bytes[16];
    unsigned bits;
  };
  std::vector<Network> networks_;
};

// An address as text, with IPv4-mapped IPv6 addresses as plain IPv4: the
// form logs and fail2ban need.
std::string canonical_address(std::string_view address);

}  // namespace popd::io
