#include "mailbox/mbox.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <unordered_map>

#include "mailbox/digest.h"
#include "params.h"

namespace popd::mailbox {

std::size_t StringSource::read_at(std::uint64_t offset, char* buffer, std::size_t size) {
  if (offset >= data_.size()) return 0;
  std::size_t n = std::min<std::uint64_t>(size, data_.size() - offset);
  std::memcpy(buffer, data_.data() + offset, n);
  return n;
}

namespace {

constexpr std::string_view from_ = "From ";

// Yields the lines of [begin, end) of a source as pieces: a line longer than
// the buffer comes in several pieces, and a piece never ends between the CR
// and LF of a CRLF.
class LineScanner {
 public:
  struct Piece {
    std::uint64_t offset = 0;
    std::string_view data;
    bool starts_line = false;
    bool ends_line = false;
  };

  // The buffer is no larger than the range: a small message costs little.
  LineScanner(ByteSource& source, std::uint64_t begin, std::uint64_t end)
      : source_(source),
        buffer_(std::max<std::uint64_t>(1, std::min<std::uint64_t>(params::read_block, end - begin)), '\0'),
        buffer_offset_(begin),
        end_(end) {}

  bool next(Piece& piece) {
    for (;;) {
      const char* start = buffer_.data() + pos_;
      if (const void* nl = std::memchr(start, '\n', fill_ - pos_)) {
        std::size_t length = static_cast<const char*>(nl) - start + 1;
        return emit(piece, length, true);
      }
      if (more_data() && (pos_ > 0 || fill_ < buffer_.size())) {
        refill();
        continue;
      }
      std::size_t length = fill_ - pos_;
      if (length == 0) return false;
      if (more_data()) {  // the buffer is full of one line
        if (buffer_[fill_ - 1] == '\r' && length > 1) --length;
        return emit(piece, length, false);
      }
      return emit(piece, length, true);  // a last line without a newline
    }
  }

  // Continue at `offset`, which starts a line.
  void seek(std::uint64_t offset) {
    buffer_offset_ = offset;
    pos_ = fill_ = 0;
    at_line_start_ = true;
  }

 private:
  bool more_data() const { return buffer_offset_ + fill_ < end_ && !exhausted_; }

  void refill() {
    std::memmove(buffer_.data(), buffer_.data() + pos_, fill_ - pos_);
    buffer_offset_ += pos_;
    fill_ -= pos_;
    pos_ = 0;
    std::uint64_t want = std::min<std::uint64_t>(buffer_.size() - fill_, end_ - (buffer_offset_ + fill_));
    std::size_t got = source_.read_at(buffer_offset_ + fill_, buffer_.data() + fill_, want);
    if (got == 0) exhausted_ = true;  // the file shrank under us: stop here
    fill_ += got;
  }

  bool emit(Piece& piece, std::size_t length, bool ends_line) {
    piece.offset = buffer_offset_ + pos_;
    piece.data = std::string_view(buffer_.data() + pos_, length);
    piece.starts_line = at_line_start_;
    piece.ends_line = ends_line;
    at_line_start_ = ends_line;
    pos_ += length;
    return true;
  }

  ByteSource& source_;
  std::string buffer_;
  std::uint64_t buffer_offset_;
  std::uint64_t end_;
  std::size_t pos_ = 0, fill_ = 0;
  bool at_line_start_ = true;
  bool exhausted_ = false;
};

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
  std::size_t got = source.read_at(at - 1, buffer, sizeof buffer);
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

class Parser {
 public:
  explicit Parser(ByteSource& source) : source_(source), scanner_(source, 0, source.size()) {
    box_.end = source.size();
  }

  Mbox run() {
    Piece piece;
    while (scanner_.next(piece)) {
      if (piece.starts_line && after_empty_line_ && piece.data.starts_with(from_)) {
        finish(pending_empty_line_.value_or(piece.offset));
        start(piece);
      } else if (!open_) {
        if (!is_empty_line(piece)) throw NotMbox("the mailbox does not start with a \"From \" line");
      } else if (in_header_) {
        header_piece(piece);
      } else {
        body_piece(piece);
      }
      if (piece.ends_line) after_empty_line_ = is_empty_line(piece) || skipped_to_record_;
      skipped_to_record_ = false;
    }
    finish(pending_empty_line_.value_or(box_.end));
    number_duplicates();
    return std::move(box_);
  }

 private:
  void start(Piece& piece) {
    current_ = Message{};
    current_.record_offset = piece.offset;
    digest_.update(content(piece));
    while (!piece.ends_line && scanner_.next(piece)) digest_.update(content(piece));
    digest_.update("\n");
    current_.content_offset = piece.offset + piece.data.size();
    open_ = true;
    in_header_ = true;
    filter_ = HeaderFilter{};
    internal_marker_ = false;
    content_length_.reset();
    uncounted_size_ = 0;
    pending_empty_line_.reset();
  }

  void finish(std::uint64_t content_end) {
    if (!open_) return;
    open_ = false;
    current_.content_length = content_end - current_.content_offset;
    digest_.update("\n" + std::to_string(current_.size - uncounted_size_));
    auto value = digest_.finish();
    std::copy_n(value.begin(), current_.digest.size(), current_.digest.begin());
    if (box_.messages.empty() && !box_.internal && internal_marker_)
      box_.internal = current_;
    else
      box_.messages.push_back(current_);
  }

  void header_piece(const Piece& piece) {
    if (is_empty_line(piece)) {
      in_header_ = false;
      pending_empty_line_ = piece.offset;
      if (content_length_) follow_content_length(piece.offset + piece.data.size());
      return;
    }
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

  void body_piece(const Piece& piece) {
    if (pending_empty_line_ && piece.starts_line) {
      current_.size += 2;  // the empty line was not a separator after all
      pending_empty_line_.reset();
    }
    if (is_empty_line(piece)) {
      pending_empty_line_ = piece.offset;
      return;
    }
    current_.size += content(piece).size() + (piece.ends_line ? 2 : 0);
  }

  // mboxcl2: trust Content-Length when it leads to a "From " line or the end.
  void follow_content_length(std::uint64_t body_start) {
    auto target = check_content_length(source_, body_start, *content_length_, box_.end);
    if (!target) return;
    current_.size += 2 + sent_size(source_, body_start, target->content_end);
    pending_empty_line_.reset();
    finish(target->content_end);
    scanner_.seek(target->next_record);
    skipped_to_record_ = true;
  }

  // Identical messages get the same digest; number them in file order.
  void number_duplicates() {
    struct Hash {
      std::size_t operator()(const std::array<unsigned char, 16>& d) const {
        std::size_t h;
        std::memcpy(&h, d.data(), sizeof h);
        return h;
      }
    };
    std::unordered_map<std::array<unsigned char, 16>, std::uint32_t, Hash> seen;
    for (Message& message : box_.messages) message.duplicate = seen[message.digest]++;
  }

  ByteSource& source_;
  LineScanner scanner_;
  Mbox box_;
  Message current_;
  Digest digest_;
  HeaderFilter filter_;
  bool open_ = false;
  bool in_header_ = false;
  bool after_empty_line_ = true;  // the start of the file counts as one
  bool skipped_to_record_ = false;
  bool internal_marker_ = false;
  bool counting_excluded_ = false;
  std::optional<std::uint64_t> content_length_;
  std::uint64_t uncounted_size_ = 0;
  std::optional<std::uint64_t> pending_empty_line_;
};

}  // namespace

std::string Message::uid() const {
  static constexpr char hex[] = "0123456789abcdef";
  std::string id;
  for (unsigned char byte : digest) {
    id += hex[byte >> 4];
    id += hex[byte & 15];
  }
  if (duplicate > 0) id += "-" + std::to_string(duplicate + 1);
  return id;
}

std::uint64_t Mbox::record_end(std::size_t index) const {
  return index + 1 < messages.size() ? messages[index + 1].record_offset : end;
}

Mbox parse(ByteSource& source) { return Parser(source).run(); }

void send(ByteSource& source, const Message& message, std::optional<std::uint64_t> body_lines,
          protocol::MessageSink& sink) {
  LineScanner scanner(source, message.content_offset,
                      message.content_offset + message.content_length);
  HeaderFilter filter;
  bool in_header = true;
  std::uint64_t lines_left = body_lines.value_or(0);
  Piece piece;
  while (scanner.next(piece)) {
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

}  // namespace popd::mailbox
