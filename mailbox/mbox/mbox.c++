#include "mailbox/mbox/mbox.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <thread>

#include <xxhash.h>

#include "mailbox/digest.h"
#include "mailbox/mbox/line_scanner.h"
#include "params.h"

namespace popd::mailbox {

std::size_t StringSource::read_at(std::uint64_t offset, char* buffer, std::size_t size) {
  if (offset >= data_.size()) return 0;
  std::size_t n = std::min<std::uint64_t>(size, data_.size() - offset);
  std::memcpy(buffer, data_.data() + offset, n);
  return n;
}

namespace {

using Piece = LineScanner::Piece;

// The part of a piece the client sees: without LF or CRLF at the line's end.
std::string_view content(const Piece& piece) {
  std::string_view text = piece.data;
  if (piece.ends_line && !text.empty() && text.back() == '\n') {
    text.remove_suffix(1);
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  }
  return text;
}

bool is_empty_line(const Piece& piece) {
  return piece.starts_line && piece.ends_line && content(piece).empty();
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x | 0x20) == (y | 0x20);
         });
}

std::string_view header_name(std::string_view line) {
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return {};
  std::string_view name = line.substr(0, colon);
  while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
  return name;
}

std::string_view header_value(std::string_view line) {
  auto colon = line.find(':');
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  return value;
}

// Headers that IMAP servers and MUAs write into spools for their own
// bookkeeping; Dovecot and UW ipop3d hide them from POP3 clients too.
bool is_metadata_header(std::string_view name) {
  static constexpr std::string_view hidden[] = {"Status", "X-Status", "X-Keywords",
                                                "X-UID",  "X-IMAP",   "X-IMAPbase"};
  return std::any_of(std::begin(hidden), std::end(hidden),
                     [&](std::string_view h) { return iequals(h, name); });
}

// Follows the header section line by line: which lines are hidden (metadata
// headers and their continuation lines).
class HeaderFilter {
 public:
  // Call for every piece of the header section.
  bool hidden(const Piece& piece) {
    if (piece.starts_line) {
      char first = piece.data.empty() ? '\0' : piece.data.front();
      if (first != ' ' && first != '\t') hidden_ = is_metadata_header(header_name(content(piece)));
    }
    return hidden_;
  }

 private:
  bool hidden_ = false;
};

// Where a Content-Length header leads: the end of this message's content and
// the start of the next record, if a "From " line or the end of the file is
// there (mboxcl2); nothing if the header cannot be trusted.
struct ContentEnd {
  std::uint64_t content_end;
  std::uint64_t next_record;
};

std::optional<ContentEnd> check_content_length(ByteSource& source, std::uint64_t body_start,
                                               std::uint64_t length, std::uint64_t end) {
  if (length > end - body_start) return std::nullopt;
  std::uint64_t at = body_start + length;
  if (at == end) return ContentEnd{at, end};
  char buffer[8] = {};
  std::size_t got = read_fully(source, at - 1, buffer, sizeof buffer);
  std::string_view before_and_after(buffer, got);
  std::string_view after = before_and_after.substr(1);
  if (before_and_after.front() == '\n' && after.starts_with(from_)) return ContentEnd{at, at};
  for (std::string_view newline : {std::string_view("\n"), std::string_view("\r\n")}) {
    if (!after.starts_with(newline)) continue;
    std::string_view rest = after.substr(newline.size());
    if (rest.starts_with(from_)) return ContentEnd{at, at + newline.size()};
    if (at + newline.size() == end) return ContentEnd{at, end};
  }
  return std::nullopt;
}

// Octets the client receives for [begin, end): each line with CRLF.
std::uint64_t sent_size(ByteSource& source, std::uint64_t begin, std::uint64_t end) {
  LineScanner scanner(source, begin, end);
  Piece piece;
  std::uint64_t size = 0;
  while (scanner.next(piece)) size += content(piece).size() + (piece.ends_line ? 2 : 0);
  return size;
}

// Parses the records from `begin`: the start of the data, or a "From "
// line that starts a record.
class Parser {
 public:
  Parser(ByteSource& source, UidScheme scheme, std::uint64_t begin = 0)
      : source_(source), scanner_(source, begin, source.size()), at_start_of_data_(begin == 0), old_(scheme) {
    box_.end = source.size();
    box_.scheme = scheme;
  }

  // Runs to the end of the data, or until a record starts at or after
  // `stop_at`; returns where it stopped: that record, or the end.
  std::uint64_t run(std::uint64_t stop_at = std::numeric_limits<std::uint64_t>::max()) {
    Piece piece;
    while (scanner_.next(piece)) {
      if (piece.starts_line && after_empty_line_ && piece.data.starts_with(from_)) {
        finish(piece.offset);
        if (piece.offset >= stop_at) return piece.offset;
        start(piece);
      } else if (!open_) {
        if (!is_empty_line(piece)) throw NotMbox("the mailbox does not start with a \"From \" line");
      } else {
        header_piece(piece);  // the body is skipped from the header's end
      }
      // After a skip the piece's bytes may have moved in the buffer.
      if (piece.ends_line) after_empty_line_ = skipped_to_record_ || is_empty_line(piece);
      skipped_to_record_ = false;
    }
    finish(box_.end);  // a header without an empty line runs to the end
    return box_.end;
  }

  Mbox& box() { return box_; }
  // The UIDVALIDITY in the header of the first record this parser read.
  std::optional<std::uint32_t> first_validity() const { return first_validity_; }

 private:
  void start(Piece& piece) {
    current_ = Message{};
    current_.record_offset = piece.offset;
    // The first piece holds the whole line or a full buffer (read_block,
    // or all that is left if less).
    current_.from_hash = from_line_hash(piece.data);
    digest_.update(content(piece));
    while (!piece.ends_line && scanner_.next(piece)) digest_.update(content(piece));
    digest_.update("\n");
    current_.content_offset = piece.offset + piece.data.size();
    open_ = true;
    filter_ = HeaderFilter{};
    internal_marker_ = false;
    content_length_.reset();
    uncounted_size_ = 0;
    old_.start();
  }

  void finish(std::uint64_t content_end) {
    if (!open_) return;
    open_ = false;
    current_.content_length = content_end - current_.content_offset;
    digest_.update("\n" + std::to_string(current_.size - uncounted_size_));
    auto value = digest_.finish();
    std::copy_n(value.begin(), current_.digest.size(), current_.digest.begin());
    keep_old_id();
    if (at_start_of_data_ && box_.messages.empty() && !box_.internal && internal_marker_)
      box_.internal = current_;
    else
      box_.messages.push_back(current_);
  }

  // What the scheme found in the header; the UIDVALIDITY only from the
  // first record of the file (UW IMAP's pseudo-message, or the first
  // message, where Dovecot and UW keep X-IMAPbase).
  void keep_old_id() {
    old_.finish();
    if (box_.messages.empty() && !box_.internal) first_validity_ = old_.validity();
    if (at_start_of_data_ && box_.messages.empty() && !box_.validity) box_.validity = old_.validity();
    if (!old_.found()) return;
    current_.old_found = true;
    current_.old_key = old_.key();
    if (box_.scheme == UidScheme::x_uidl) {
      current_.old_key = box_.x_uidls.size() << 8 | old_.text().size();
      box_.x_uidls += old_.text();
    }
  }

  void header_piece(const Piece& piece) {
    if (is_empty_line(piece)) {
      if (content_length_ && follow_content_length(piece.offset + piece.data.size())) return;
      auto body = scanner_.skip_body(piece.offset);
      current_.size += body.size;
      finish(body.content_end);
      skipped_to_record_ = true;  // the scanner is at the next "From " line, or the end
      return;
    }
    old_.header_piece(piece.data, piece.starts_line);
    if (piece.starts_line && piece.ends_line) old_.header_line(content(piece));
    if (filter_.hidden(piece)) {
      if (piece.starts_line && iequals(header_name(content(piece)), "X-IMAP")) internal_marker_ = true;
      return;
    }
    std::uint64_t bytes = content(piece).size() + (piece.ends_line ? 2 : 0);
    current_.size += bytes;
    if (piece.starts_line && piece.ends_line) inspect_header(content(piece), bytes);
    if (!counting_excluded_) {
      digest_.update(content(piece));
      if (piece.ends_line) digest_.update("\n");
    }
    if (piece.ends_line) counting_excluded_ = false;
  }

  // Looks at one whole header line for what the parser needs to know.
  void inspect_header(std::string_view line, std::uint64_t bytes) {
    std::string_view name = header_name(line);
    if (iequals(name, "Content-Length")) {
      // Some writers add or change it; keep it out of the unique-id.
      counting_excluded_ = true;
      uncounted_size_ += bytes;
      std::string_view value = header_value(line);
      std::uint64_t length = 0;
      auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), length);
      if (error == std::errc() && end == value.data() + value.size() && !value.empty())
        content_length_ = length;
    } else if (iequals(name, "Subject") &&
               header_value(line) == "DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA") {
      internal_marker_ = true;
    }
  }

  // mboxcl2: trust Content-Length when it leads to a "From " line or the end.
  bool follow_content_length(std::uint64_t body_start) {
    auto target = check_content_length(source_, body_start, *content_length_, box_.end);
    if (!target) return false;
    current_.size += 2 + sent_size(source_, body_start, target->content_end);
    finish(target->content_end);
    scanner_.seek(target->next_record);
    skipped_to_record_ = true;
    return true;
  }

  ByteSource& source_;
  LineScanner scanner_;
  bool at_start_of_data_;  // only the first message may be UW IMAP's pseudo-message
  Mbox box_;
  Message current_;
  Digest digest_;
  HeaderFilter filter_;
  bool open_ = false;
  bool after_empty_line_ = true;  // the start of the file counts as one
  bool skipped_to_record_ = false;
  bool internal_marker_ = false;
  bool counting_excluded_ = false;
  std::optional<std::uint64_t> content_length_;
  std::uint64_t uncounted_size_ = 0;
  OldId old_;
  std::optional<std::uint32_t> first_validity_;
};

// Moves the messages of `from` to the end of `to` block by block, never
// copying all at once, with the X-UIDL values they refer to.
void append(Mbox& from, Mbox& to) {
  std::uint64_t shift = to.x_uidls.size() << 8;
  to.x_uidls += from.x_uidls;
  while (!from.messages.empty()) {
    Message& message = to.messages.emplace_back(from.messages.front());
    if (message.old_found && to.scheme == UidScheme::x_uidl) message.old_key += shift;
    from.messages.pop_front();
  }
}

// A record start near the middle of [begin, end of data), for a second
// thread to parse from: a "From " line after an empty line. 0 if there is
// none nearby.
std::uint64_t middle_record(ByteSource& source, std::uint64_t begin) {
  std::unique_ptr<char[]> window(new char[params::read_block]);  // not zeroed: only read bytes are looked at
  std::uint64_t at = begin + (source.size() - begin) / 2;
  for (int tries = 0; tries < 8 && at < source.size(); ++tries, at += params::read_block - 8) {
    std::size_t got = read_fully(source, at, window.get(), params::read_block);
    std::string_view data(window.get(), got);
    for (std::string_view separator : {std::string_view("\n\nFrom "), std::string_view("\n\r\nFrom ")})
      if (auto found = data.find(separator); found != std::string_view::npos)
        return at + found + separator.size() - from_.size();
  }
  return 0;
}

// The records from `begin` (the start of the data, or of a record) to the
// end, parsed by two threads from `parallel_from` bytes on; duplicates are
// not numbered yet.
Mbox parse_from(ByteSource& source, UidScheme scheme, std::uint64_t begin, std::uint64_t parallel_from) {
  Parser first(source, scheme, begin);
  std::uint64_t middle = source.size() - begin >= parallel_from ? middle_record(source, begin) : 0;
  if (middle <= begin) {
    first.run();
    return std::move(first.box());
  }
  // A second thread parses from a record start near the middle. Whether
  // that is really one (not, say, inside a body whose Content-Length is
  // trusted) only the first pass can tell: it stops at the first record
  // at or after the middle, and the two results are joined only if it is
  // exactly there. Otherwise the first pass goes on alone.
  Parser second(source, scheme, middle);
  std::exception_ptr failed;
  std::jthread helper([&] {
    try {
      second.run();
    } catch (...) {
      failed = std::current_exception();
    }
  });
  std::uint64_t met = first.run(middle);
  helper.join();
  Mbox& box = first.box();
  if (begin == 0 && !box.internal && box.messages.empty()) {
    // Only empty lines before the middle: its record is the file's first,
    // which may be UW IMAP's pseudo-message. Rare enough to parse again.
    Parser whole(source, scheme);
    whole.run();
    return std::move(whole.box());
  }
  std::optional<Parser> again;
  if (met != middle || failed) again.emplace(source, scheme, met), again->run();
  Parser& rest = again ? *again : second;
  // If the first pass read only UW IMAP's pseudo-message and it had no
  // X-IMAP, the UIDVALIDITY comes from the first message: the rest's first.
  if (begin == 0 && box.messages.empty() && !box.validity) box.validity = rest.first_validity();
  append(rest.box(), box);
  return std::move(box);
}

}  // namespace

std::uint64_t from_line_hash(std::string_view line) {
  return XXH3_64bits(line.data(), std::min(line.size(), params::index_from_bytes));
}

Mbox parse(ByteSource& source, UidScheme scheme, std::uint64_t parallel_from) {
  Mbox box = parse_from(source, scheme, 0, parallel_from);
  box.renumber();
  return box;
}

Mbox parse_after(ByteSource& source, Mbox known, std::uint64_t parallel_from) {
  if (known.end == source.size()) return known;
  if (known.messages.empty()) return parse(source, known.scheme, parallel_from);
  // The last record may go on (a line without a newline, or no empty line
  // before what was appended): it is parsed again with what follows.
  std::uint64_t resume = known.messages.back().record_offset;
  known.messages.pop_back();
  Mbox tail = parse_from(source, known.scheme, resume, parallel_from);
  append(tail, known);
  known.end = tail.end;
  known.renumber();
  return known;
}

void Mbox::remove(const std::vector<bool>& deleted) {
  // In place: a second copy of a large mailbox's messages would double
  // the session's memory at its end.
  std::uint64_t removed = 0;
  std::size_t kept = 0;
  bool only_the_last = true;  // every message removed comes after every one kept
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (i < deleted.size() && deleted[i]) {
      only_the_last = only_the_last && (i + 1 == messages.size() || (i + 1 < deleted.size() && deleted[i + 1]));
      removed += record_end(i) - messages[i].record_offset;  // reads messages[i + 1], not yet moved
      continue;
    }
    Message& message = messages[kept++] = messages[i];
    message.record_offset -= removed;
    message.content_offset -= removed;
  }
  messages.resize(kept);
  end -= removed;
  // A copy's number counts the copies before it, so taking messages off
  // the end changes none, and a DELE of the newest need not number them
  // all again. Not for x-uidl: whether a copy's "<X-UIDL>-N" is free depends
  // on the X-UIDLs after it too.
  if (removed > 0 && (!only_the_last || scheme == UidScheme::x_uidl)) renumber();
}

namespace {

void send_lines(LineScanner& scanner, std::optional<std::uint64_t> body_lines, protocol::MessageSink& sink) {
  HeaderFilter filter;
  bool in_header = true;
  std::uint64_t lines_left = body_lines.value_or(0);
  Piece piece;
  for (;;) {
    // RETR's body goes in blocks of whole lines, not line by line.
    if (!in_header && !body_lines)
      for (std::string_view block; !(block = scanner.whole_lines()).empty();) sink.lines(block);
    if (!scanner.next(piece)) return;
    if (in_header) {
      if (is_empty_line(piece)) {
        in_header = false;
        sink.end_line();
        continue;
      }
      if (filter.hidden(piece)) continue;
    } else if (body_lines && lines_left == 0) {
      return;
    }
    sink.text(content(piece));
    if (piece.ends_line) {
      sink.end_line();
      if (!in_header) --lines_left;
    }
  }
}

}  // namespace

bool send(ByteSource& source, const Message& message, std::optional<std::uint64_t> body_lines,
          protocol::MessageSink& sink, ReadBuffer& buffer) {
  // TOP needs the header and a few lines: a small first read, not the
  // whole message.
  LineScanner scanner(source, message.content_offset, message.content_offset + message.content_length,
                      body_lines ? params::top_block : params::read_block, buffer);
  try {
    send_lines(scanner, body_lines, sink);
  } catch (const SpoolChanged&) {
    return false;
  }
  return true;
}

void send(std::string_view content, const Message& message, std::optional<std::uint64_t> body_lines,
          protocol::MessageSink& sink) {
  LineScanner scanner(content, message.content_offset);
  send_lines(scanner, body_lines, sink);
}

}  // namespace popd::mailbox
