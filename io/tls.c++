#include "io/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace popd::io {

std::string tls_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    if (!text.empty()) text += "; ";
    text += buffer;
  }
  return text.empty() ? "unknown TLS error" : text;
}

std::unique_ptr<TlsContext> TlsContext::load(const TlsSettings& settings, std::string& error) {
  SSL_CTX* context = SSL_CTX_new(TLS_server_method());
  if (!context) {
    error = tls_errors();
    return nullptr;
  }
  std::unique_ptr<TlsContext> result(new TlsContext(context));
  auto failed = [&](const std::string& what) {
    error = what + ": " + tls_errors();
    return nullptr;
  };
  // RFC 8314 and RFC 8996: TLS 1.2 or later.
  if (SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION) != 1) return failed("cannot set TLS 1.2 minimum");
  // One process per connection: a session cache would never be hit.
  SSL_CTX_set_session_cache_mode(context, SSL_SESS_CACHE_OFF);
  // Client-initiated renegotiation only costs the server CPU.
  SSL_CTX_set_options(context, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(context, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (!settings.ciphers.empty() && SSL_CTX_set_cipher_list(context, settings.ciphers.c_str()) != 1)
    return failed("bad --tls-ciphers");
  if (!settings.ciphersuites.empty() && SSL_CTX_set_ciphersuites(context, settings.ciphersuites.c_str()) != 1)
    return failed("bad --tls-ciphersuites");
  if (SSL_CTX_use_certificate_chain_file(context, settings.certificate.c_str()) != 1)
    return failed("cannot load certificate " + settings.certificate);
  // OpenSSL's default asks for an encrypted key's passphrase on the
  // terminal, else on standard input and error: under inetd the client's
  // socket. popd never asks.
  SSL_CTX_set_default_passwd_cb(context, [](char*, int, int, void*) { return 0; });
  if (SSL_CTX_use_PrivateKey_file(context, settings.key.c_str(), SSL_FILETYPE_PEM) != 1)
    return failed("cannot load key " + settings.key + " (an encrypted key needs its passphrase removed)");
  if (SSL_CTX_check_private_key(context) != 1) return failed("the key does not match the certificate");
  return result;
}

TlsContext::~TlsContext() { SSL_CTX_free(context_); }

}  // namespace popd::io
