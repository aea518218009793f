// OpenSSL server context: certificate, key and protocol settings, loaded
// once at start-up (as root, so the key may be readable by root only).
#pragma once

#include <memory>
#include <string>

struct ssl_ctx_st;
struct ssl_st;

namespace popd::io {

struct TlsSettings {
  std::string certificate;   // PEM; may hold the chain
  std::string key;           // PEM
  std::string ciphers;       // TLS 1.2 cipher list; empty: OpenSSL's system default
  std::string ciphersuites;  // TLS 1.3 suites; empty: OpenSSL's system default
};

class TlsContext {
 public:
  // nullptr and `error` set if the settings do not work.
  static std::unique_ptr<TlsContext> load(const TlsSettings& settings, std::string& error);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  ssl_ctx_st* get() const { return context_; }

 private:
  explicit TlsContext(ssl_ctx_st* context) : context_(context) {}
  ssl_ctx_st* context_;
};

// The OpenSSL error queue as text (and emptied).
std::string tls_errors();

}  // namespace popd::io
