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
  int32_t ascii_[128];  // lookup_ of each one-byte character, or -1
  std::vector<int32_t> merged_;

  // The caches are flat tables probed in place (open addressing, linear probing, at most half full): a word costs one
  // probe into one array, where std::unordered_map's buckets and nodes cost two or three cache misses a word, most of
  // the encoder's time over a corpus's ~10^5 distinct words (docs/BENCHMARKS.md).

  // Pairs looked up: key a << 32 | b (ids are non-negative, so kNoPair never occurs), value the merged id or -1.
  struct PairSlot {
    uint64_t key;
    int32_t id;
  };
  static constexpr uint64_t kNoPair = ~0ull;
  std::vector<PairSlot> pairs_;
  size_t pairCount_ = 0;

  // A word's ids at [at, at + n) of cached_; its text (with its leading space) in the slot itself when at most
  // kInline bytes (most words: one memory access a word), else at [key, key + len) of words_. Bounded as the
  // reference's caches are (200,000 words): the bound changes nothing but memory.
  static constexpr size_t kInline = 16;
  struct WordSlot {
    uint64_t hash;
    uint32_t len;  // 0: an empty slot (a word is never empty)
    uint32_t key;
    uint32_t at, n;
    char text[kInline];
  };
  std::vector<WordSlot> slots_;
  size_t wordCount_ = 0;
  std::string words_;
  std::vector<int32_t> cached_;
  std::vector<int32_t> scratch_;
  std::string prefixed_;

  const WordSlot* findWord(std::string_view word, uint64_t hash) const;
  void addWord(std::string_view word, uint64_t hash, const std::vector<int32_t>& ids);
  void growWords();
};

}  // namespace sdl
