// SHA-256 through OpenSSL, for unique-ids and journal checksums.
#pragma once

#include <array>
#include <string_view>

struct evp_md_ctx_st;

namespace popd::mailbox {

class Digest {
 public:
  using Value = std::array<unsigned char, 32>;
  Digest();
  ~Digest();
  Digest(const Digest&) = delete;
  Digest& operator=(const Digest&) = delete;

  void update(std::string_view bytes);
  // Returns the digest and starts over.
  Value finish();

 private:
  evp_md_ctx_st* context_;
};

Digest::Value sha256(std::string_view bytes);

}  // namespace popd::mailbox
