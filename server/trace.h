// --trace-dir: transcripts of one user's sessions, for debugging a client
// (Dovecot's rawlog_dir), with every password and SASL response replaced
// by *** (protocol/trace.h).
//
// Who writes what: the pre-auth process may open no file (DESIGN), so it
// holds its part in memory and sends it to the monitor before each login
// request and before its end report (handover.h). The monitor, as root,
// puts it in a new file of the named user's, each time whole; a session
// that follows inherits that file and appends the rest. The files are
// root's, mode 0600; the session's process may append to its own, never
// read one. Without root (one process for the invoking user) the file is
// that user's own.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "options.h"
#include "protocol/trace.h"
#include "sys/fd.h"

namespace popd::server {

// A transcript: "C: " before each client line, "S: " before each reply
// line, the bytes as they went (line ends too).
class SessionTrace final : public protocol::Trace {
 public:
  // Held in memory, up to params::max_preauth_trace (the pre-auth process).
  SessionTrace() = default;
  // Appended to `fd` (not owned), up to params::max_trace_bytes in all.
  explicit SessionTrace(int fd);
  ~SessionTrace();
  SessionTrace(const SessionTrace&) = delete;
  SessionTrace& operator=(const SessionTrace&) = delete;

  void client(std::string_view line) override;
  void server(std::string_view bytes) override;
  // All of it, in memory; what is not yet written, on a file.
  const std::string& held() const { return text_; }

 private:
  void add(std::string_view bytes);
  void flush();

  int fd_ = -1;
  std::string text_;
  std::uint64_t size_ = 0;  // of the whole transcript
  bool at_line_start_ = true;
  bool full_ = false;
};

// A new trace file for `user`, if --trace-dir traces that user: in the
// template's directory expanded for the user, when it exists (a template
// without %-sequences is made), and reached through directories that only
// root (or the invoking user, without root) can change; an unsafe one is
// refused, with `error`. The file starts with a line naming the session.
struct TraceFile {
  sys::UniqueFd fd;       // none: not traced
  std::string path;
  std::uint64_t header = 0;  // the bytes of that first line
  std::string error;      // why an unsafe directory was refused
};
TraceFile create_trace_file(const Options& options, const std::string& user, const std::string& peer);

// The monitor's: a file for each user a connection names, the latest one
// current; each transcript the pre-auth process sends replaces the pre-auth
// part of that user's file. The session inherits fd().
class TraceFiles {
 public:
  TraceFiles(const Options& options, std::string peer) : options_(options), peer_(std::move(peer)) {}
  void record(const std::string& user, std::string_view transcript);
  int fd() const { return file_.fd.get(); }

 private:
  const Options& options_;
  std::string peer_;
  std::string user_;
  TraceFile file_;
};

}  // namespace popd::server
