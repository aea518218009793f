// libFuzzer target: the PROXY protocol header parser, which runs as root.
// A complete header never claims more bytes than it was given, an
// incomplete one always asks for more, and a source is an address.
#include <arpa/inet.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "io/proxy.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto header = popd::io::parse_proxy_header(input);
  using Status = popd::io::ProxyHeader::Status;
  if (header.status == Status::complete && header.length > size) std::abort();
  if (header.status == Status::incomplete && header.length <= size) std::abort();
  if (!header.source.empty()) {
    unsigned char bytes[16];
    if (inet_pton(AF_INET, header.source.c_str(), bytes) != 1 && inet_pton(AF_INET6, header.source.c_str(), bytes) != 1)
      std::abort();
  }
  return 0;
}
