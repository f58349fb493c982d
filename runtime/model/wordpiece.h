// BERT (uncased) WordPiece tokenizer, equivalent to Hugging Face's BertTokenizerFast with
// do_lower_case=true, tokenize_chinese_chars=true, strip_accents unset (follows lowercase):
//   1. normalise: drop NUL, U+FFFD and control/format characters (Unicode category C*, except
//      \t \n \r), map whitespace (Zs, Zl, Zp, \t \n \r) to ' ', put spaces around CJK ideographs,
//      strip accents (NFD, then drop Mn), lowercase;
//   2. pre-tokenise: split on whitespace, each punctuation character (Unicode P* or ASCII
//      punctuation) is its own word;
//   3. WordPiece: greedy longest match from the vocab, continuation pieces prefixed "##"; a word
//      longer than max_chars_per_word characters, or one that cannot be covered, becomes [UNK];
//   4. Encode adds [CLS] ... [SEP] and truncates to max_length ids in all.
// Unicode properties come from libutf8proc.
// Ownership and threads: immutable after Load; every method is const and thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/core/status.h"

namespace archi::model {

class WordPieceTokenizer {
 public:
  struct Options {
    bool lowercase = true;     // also strips accents (uncased BERT)
    int64_t max_length = 512;  // ids per sequence, [CLS] and [SEP] included
    int64_t max_chars_per_word = 100;
  };

  // Reads `vocab_path` (one token per line; the line number is the id). kNotFound when the file
  // is missing, kInvalidArgument when it is empty, lacks [CLS]/[SEP]/[UNK]/[PAD], or repeats a
  // token.
  static Result<std::unique_ptr<WordPieceTokenizer>> Load(const std::string& vocab_path,
                                                          Options options);
  static Result<std::unique_ptr<WordPieceTokenizer>> Load(const std::string& vocab_path) {
    return Load(vocab_path, Options{});
  }

  // Word pieces of `text` (no special tokens, no truncation). kInvalidArgument for invalid UTF-8.
  Result<std::vector<std::string>> Tokenize(std::string_view text) const;
  // [CLS] pieces... [SEP] as ids, truncated to options().max_length.
  Result<std::vector<int32_t>> Encode(std::string_view text) const;

  // The id of `token`, or -1.
  int32_t TokenId(std::string_view token) const;
  // "" for an id outside the vocab.
  std::string_view IdToToken(int32_t id) const;

  int64_t vocab_size() const { return static_cast<int64_t>(tokens_.size()); }
  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  const Options& options() const { return options_; }

 private:
  WordPieceTokenizer() = default;
  // Appends the pieces of one pre-tokenised word (code points) to `out`.
  void WordPieces(const std::vector<int32_t>& word, std::vector<std::string>& out) const;

  Options options_;
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int32_t> ids_;
  int32_t cls_id_ = -1;
  int32_t sep_id_ = -1;
  int32_t pad_id_ = -1;
  int32_t unk_id_ = -1;
};

}  // namespace archi::model
