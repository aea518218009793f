#include "mailbox/digest.h"

#include <openssl/evp.h>

#include <new>

namespace popd::mailbox {

Digest::Digest() : context_(EVP_MD_CTX_new()) {
  if (!context_ || EVP_DigestInit_ex(context_, EVP_sha256(), nullptr) != 1) throw std::bad_alloc();
}

Digest::~Digest() { EVP_MD_CTX_free(context_); }

void Digest::update(std::string_view bytes) {
  if (!bytes.empty()) EVP_DigestUpdate(context_, bytes.data(), bytes.size());
}

Digest::Value Digest::finish() {
  Value value{};
  unsigned int length = 0;
  EVP_DigestFinal_ex(context_, value.data(), &length);
  EVP_DigestInit_ex(context_, EVP_sha256(), nullptr);
  return value;
}

Digest::Value sha256(std::string_view bytes) {
  Digest digest;
  digest.update(bytes);
  return digest.finish();
}

}  // namespace popd::mailbox
