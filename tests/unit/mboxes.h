// Mailboxes for the unit tests: random messages as MDAs deliver them, a
// summary of everything a parse found, for comparing parses, and a sink
// that collects what a message sends.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "mailbox/mbox/mbox.h"

namespace popd::testing {

// What a message sends, as the client receives it before byte-stuffing.
struct CollectSink final : protocol::MessageSink {
  std::string out;
  void text(std::string_view part) override { out += part; }
  void end_line() override { out += "\r\n"; }
};

// A random message as an MDA would deliver it (ends with a newline; body
// lines "From " after an empty line are quoted), with LF or CRLF.
inline std::string random_message(std::mt19937& random, bool crlf) {
  std::string eol = crlf ? "\r\n" : "\n";
  auto pick = [&](int n) { return static_cast<int>(random() % n); };
  std::string message;
  static const char* headers[] = {"Subject: hello", "Status: RO", "X-UID: 7", "X-Keywords: a",
                                  "Received: from x", "\tby y", "X-Status: A", "Message-ID: <m@x>",
                                  "From: someone", "X-IMAPbase: 1 2", "To: you"};
  int header_count = 1 + pick(6);
  for (int i = 0; i < header_count; ++i) message += std::string(headers[pick(11)]) + eol;
  message += "Date: " + std::to_string(random()) + eol;
  if (pick(10) == 0) return message;  // header only
  message += eol;
  static const char* lines[] = {"text", ".", "..", ".leading dot", "", "From inside", ">From quoted",
                                "a longer line of body text", "\t", " "};
  int body_count = pick(12);
  bool previous_empty = true;  // the line that ends the header
  for (int i = 0; i < body_count; ++i) {
    std::string line = lines[pick(10)];
    if (previous_empty && line.starts_with("From ")) line = ">" + line;
    if (pick(50) == 0) line = std::string(1 + pick(3000), 'x');
    message += line + eol;
    previous_empty = line.empty();
  }
  return message;
}

// A mailbox of `count` random messages (and UW IMAP's pseudo-message first
// if `internal`), each after a From_ line.
inline std::string random_mbox(std::mt19937& random, int count, const std::string& eol, bool internal = false) {
  std::string mbox = internal ? "From MAILER-DAEMON Mon Jan  1 00:00:00 2024" + eol +
                                    "Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA" + eol +
                                    "X-IMAP: 1 2" + eol + eol + "x" + eol + eol
                              : "";
  for (int i = 0; i < count; ++i)
    mbox += "From s Mon Jan  1 00:00:0" + std::to_string(i % 10) + " 2024" + eol +
            random_message(random, eol == "\r\n") + eol;
  return mbox;
}

// Everything parse() finds, for comparing two parses.
inline std::vector<std::string> summary(const mailbox::Mbox& box) {
  std::vector<std::string> rows;
  for (std::size_t i = 0; i < box.messages.size(); ++i) {
    const mailbox::Message& m = box.messages[i];
    rows.push_back(std::to_string(m.record_offset) + " " + std::to_string(m.content_offset) + " " +
                   std::to_string(m.content_length) + " " + std::to_string(m.size) + " " + m.uid() + " " +
                   std::to_string(m.from_hash) + " " + box.uid(i));
  }
  rows.push_back(box.internal ? "internal " + std::to_string(box.internal->record_offset) : "no internal");
  rows.push_back(box.validity ? "validity " + std::to_string(*box.validity) : "no validity");
  return rows;
}

}  // namespace popd::testing
