#include "runtime/model/wordpiece.h"

#include <utf8proc.h>

#include <fstream>
#include <utility>

namespace archi::model {
namespace {

bool IsCjk(int32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

bool IsWhitespace(int32_t c) {
  if (c == ' ' || c == '\t' || c == '\n' || c == '\r') return true;
  const auto cat = utf8proc_category(c);
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

// Category C* (control, format, surrogate, private use, unassigned), except \t \n \r.
bool IsControl(int32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  const auto cat = utf8proc_category(c);
  return cat == UTF8PROC_CATEGORY_CN || cat == UTF8PROC_CATEGORY_CC ||
         cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CS || cat == UTF8PROC_CATEGORY_CO;
}

// ASCII punctuation (which includes $ + < = > ^ ` | ~, symbols in Unicode) or Unicode P*.
bool IsPunctuation(int32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
      (c >= 123 && c <= 126)) {
    return true;
  }
  const auto cat = utf8proc_category(c);
  return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

void AppendUtf8(int32_t c, std::string& out) {
  utf8proc_uint8_t buf[4];
  const auto n = utf8proc_encode_char(c, buf);
  out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

Result<std::vector<int32_t>> Decode(std::string_view text) {
  std::vector<int32_t> out;
  out.reserve(text.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  auto left = static_cast<utf8proc_ssize_t>(text.size());
  while (left > 0) {
    utf8proc_int32_t c = 0;
    const auto n = utf8proc_iterate(p, left, &c);
    if (n <= 0) {
      return InvalidArgumentError("WordPieceTokenizer: invalid UTF-8 at byte " +
                                  std::to_string(text.size() - static_cast<size_t>(left)));
    }
    out.push_back(c);
    p += n;
    left -= n;
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::Load(const std::string& vocab_path,
                                                                     Options options) {
  if (options.max_length < 2 || options.max_chars_per_word < 1) {
    return InvalidArgumentError(
        "WordPieceTokenizer: max_length must be >= 2 and "
        "max_chars_per_word >= 1");
  }
  std::ifstream in(vocab_path, std::ios::binary);
  if (!in) return NotFoundError("WordPieceTokenizer: cannot open vocab file " + vocab_path);
  std::unique_ptr<WordPieceTokenizer> t(new WordPieceTokenizer());
  t->options_ = options;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto id = static_cast<int32_t>(t->tokens_.size());
    if (!t->ids_.emplace(line, id).second) {
      return InvalidArgumentError("WordPieceTokenizer: " + vocab_path + " line " +
                                  std::to_string(id + 1) + " repeats token '" + line + "'");
    }
    t->tokens_.push_back(std::move(line));
  }
  if (in.bad()) return InvalidArgumentError("WordPieceTokenizer: error reading " + vocab_path);
  if (t->tokens_.empty()) {
    return InvalidArgumentError("WordPieceTokenizer: vocab file " + vocab_path + " is empty");
  }
  t->cls_id_ = t->TokenId("[CLS]");
  t->sep_id_ = t->TokenId("[SEP]");
  t->pad_id_ = t->TokenId("[PAD]");
  t->unk_id_ = t->TokenId("[UNK]");
  if (t->cls_id_ < 0 || t->sep_id_ < 0 || t->pad_id_ < 0 || t->unk_id_ < 0) {
    return InvalidArgumentError("WordPieceTokenizer: vocab file " + vocab_path +
                                " lacks one of [CLS], [SEP], [PAD], [UNK]");
  }
  return t;
}

int32_t WordPieceTokenizer::TokenId(std::string_view token) const {
  auto it = ids_.find(std::string(token));
  return it == ids_.end() ? -1 : it->second;
}

std::string_view WordPieceTokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(tokens_.size())) return {};
  return tokens_[static_cast<size_t>(id)];
}

void WordPieceTokenizer::WordPieces(const std::vector<int32_t>& word,
                                    std::vector<std::string>& out) const {
  if (static_cast<int64_t>(word.size()) > options_.max_chars_per_word) {
    out.emplace_back(tokens_[static_cast<size_t>(unk_id_)]);
    return;
  }
  // Byte offset of each code point, so candidate pieces are substrings of one UTF-8 string.
  std::string utf8;
  std::vector<size_t> offset;
  offset.reserve(word.size() + 1);
  for (int32_t c : word) {
    offset.push_back(utf8.size());
    AppendUtf8(c, utf8);
  }
  offset.push_back(utf8.size());

  const size_t first = out.size();
  size_t start = 0;
  std::string candidate;
  while (start < word.size()) {
    size_t end = word.size();
    bool found = false;
    while (end > start) {
      candidate.assign(start > 0 ? "##" : "");
      candidate.append(utf8, offset[start], offset[end] - offset[start]);
      if (ids_.count(candidate)) {
        found = true;
        break;
      }
      --end;
    }
    if (!found) {
      out.resize(first);
      out.emplace_back(tokens_[static_cast<size_t>(unk_id_)]);
      return;
    }
    out.push_back(candidate);
    start = end;
  }
}

Result<std::vector<std::string>> WordPieceTokenizer::Tokenize(std::string_view text) const {
  ARCHI_ASSIGN_OR_RETURN(std::vector<int32_t> cps, Decode(text));

  // 1. Clean text and space out CJK ideographs.
  std::vector<int32_t> cleaned;
  cleaned.reserve(cps.size());
  for (int32_t c : cps) {
    if (c == 0 || c == 0xFFFD || IsControl(c)) continue;
    if (IsWhitespace(c)) {
      cleaned.push_back(' ');
    } else if (IsCjk(c)) {
      cleaned.push_back(' ');
      cleaned.push_back(c);
      cleaned.push_back(' ');
    } else {
      cleaned.push_back(c);
    }
  }
  // 2. Strip accents (NFD, drop non-spacing marks), then lowercase.
  std::vector<int32_t> normal;
  if (options_.lowercase) {
    normal.reserve(cleaned.size());
    utf8proc_int32_t buf[32];
    for (int32_t c : cleaned) {
      int last_boundclass = 0;
      const auto n = utf8proc_decompose_char(c, buf, 32, UTF8PROC_DECOMPOSE, &last_boundclass);
      if (n < 0 || n > 32) {  // cannot happen for canonical decomposition of a valid code point
        normal.push_back(utf8proc_tolower(c));
        continue;
      }
      for (utf8proc_ssize_t i = 0; i < n; ++i) {
        if (utf8proc_category(buf[i]) == UTF8PROC_CATEGORY_MN) continue;
        normal.push_back(utf8proc_tolower(buf[i]));
      }
    }
  } else {
    normal = std::move(cleaned);
  }
  // 3. Split on whitespace and punctuation; 4. WordPiece each word.
  std::vector<std::string> out;
  std::vector<int32_t> word;
  auto flush = [&] {
    if (!word.empty()) WordPieces(word, out);
    word.clear();
  };
  for (int32_t c : normal) {
    if (IsWhitespace(c)) {
      flush();
    } else if (IsPunctuation(c)) {
      flush();
      word.push_back(c);
      flush();
    } else {
      word.push_back(c);
    }
  }
  flush();
  return out;
}

Result<std::vector<int32_t>> WordPieceTokenizer::Encode(std::string_view text) const {
  ARCHI_ASSIGN_OR_RETURN(std::vector<std::string> pieces, Tokenize(text));
  const size_t keep = std::min(pieces.size(), static_cast<size_t>(options_.max_length - 2));
  std::vector<int32_t> ids;
  ids.reserve(keep + 2);
  ids.push_back(cls_id_);
  for (size_t i = 0; i < keep; ++i) ids.push_back(ids_.at(pieces[i]));
  ids.push_back(sep_id_);
  return ids;
}

}  // namespace archi::model
