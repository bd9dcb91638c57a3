// llama2.c's tokenizer (SentencePiece-style BPE: code points, byte fallback, merges by best score), word by word with
// a cache. The TypeScript reference is Llama2cTokenizer.encode in src/models/tokenizer.ts; a test holds the two equal.
// Only for word-safe vocabularies (no piece has a space after its first character: no merge crosses the start of a
// space-led word), where encoding word by word gives run.c's result exactly.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sdl {

class Bpe {
 public:
  // vocab[i]: piece i as UTF-8 (a piece's first id is the one its text maps to); scores[i]: its merge score.
  Bpe(std::vector<std::string> vocab, std::vector<float> scores);

  // Appends the ids of UTF-8 text (well formed) to out, no BOS; `prefix`: the dummy-prefix space goes before a
  // non-empty text (run.c adds it when the vocabulary has a ' ' piece).
  void encode(std::string_view text, bool prefix, std::vector<int32_t>& out);

 private:
  // run.c on one word: its code points' ids (or their bytes + 3), then best-score merges, leftmost on ties.
  void merge(std::string_view word, std::vector<int32_t>& ids);
  // The id of piece a's text followed by piece b's, or -1.
  int32_t pair(int32_t a, int32_t b);

  std::vector<std::string> vocab_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int32_t> lookup_;
  std::unordered_map<uint64_t, int32_t> pairs_;
  // A word's ids at [at, at + n) of cached_, by the word's text (with its leading space). Bounded as the
  // reference's caches are (200,000 words): the bound changes nothing but memory.
  struct Span {
    uint32_t at, n;
  };
  std::unordered_map<std::string, Span> cache_;
  std::vector<int32_t> cached_;
  std::vector<int32_t> scratch_;
};

}  // namespace sdl
