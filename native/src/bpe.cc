#include "bpe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

namespace sdl {

namespace {
constexpr size_t kCacheWords = 200000;
// Pairs looked up, kept at most this many (32 MB of table): a large vocabulary over a long harvest meets ever more of
// them, and the cache is only a cache.
constexpr size_t kCachePairs = 1u << 20;
constexpr size_t kFirstSlots = 1024;
constexpr size_t kLongWord = 1024;

// Bytes in the UTF-8 sequence a lead byte starts (well-formed input: continuation bytes never lead).
inline size_t seqLen(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

inline uint64_t mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 33;
  return h;
}

// A word's hash, eight bytes at a time (the table's index is its low bits, so every byte must reach them).
inline uint64_t hashBytes(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = mix(h ^ w) * 0x9E3779B97F4A7C15ull;
  }
  uint64_t w = 0;
  std::memcpy(&w, s.data() + i, s.size() - i);
  return mix(h ^ w);
}
}  // namespace

Bpe::Bpe(std::vector<std::string> vocab, std::vector<float> scores) : vocab_(std::move(vocab)), scores_(std::move(scores)) {
  lookup_.reserve(vocab_.size() * 2);
  for (size_t i = 0; i < vocab_.size(); i++) lookup_.emplace(vocab_[i], (int32_t)i);  // the first id of a text wins
  for (int b = 0; b < 128; b++) {
    auto f = lookup_.find(std::string(1, (char)b));
    ascii_[b] = f == lookup_.end() ? -1 : f->second;
  }
  pairs_.assign(kFirstSlots, PairSlot{kNoPair, 0});
  slots_.assign(kFirstSlots, WordSlot{});
}

int32_t Bpe::pair(int32_t a, int32_t b) {
  const uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  size_t mask = pairs_.size() - 1;
  size_t i = mix(key) & mask;
  for (; pairs_[i].key != kNoPair; i = (i + 1) & mask)
    if (pairs_[i].key == key) return pairs_[i].id;
  std::string s;
  s.reserve(vocab_[a].size() + vocab_[b].size());
  s += vocab_[a];
  s += vocab_[b];
  auto f = lookup_.find(s);
  const int32_t id = f == lookup_.end() ? -1 : f->second;
  if (pairCount_ >= kCachePairs) {
    std::fill(pairs_.begin(), pairs_.end(), PairSlot{kNoPair, 0});
    pairCount_ = 0;
  } else if (2 * (pairCount_ + 1) > pairs_.size()) {
    std::vector<PairSlot> old(2 * pairs_.size(), PairSlot{kNoPair, 0});
    old.swap(pairs_);
    mask = pairs_.size() - 1;
    for (const PairSlot& p : old)
      if (p.key != kNoPair) {
        size_t j = mix(p.key) & mask;
        while (pairs_[j].key != kNoPair) j = (j + 1) & mask;
        pairs_[j] = p;
      }
  }
  mask = pairs_.size() - 1;
  for (i = mix(key) & mask; pairs_[i].key != kNoPair;) i = (i + 1) & mask;
  pairs_[i] = PairSlot{key, id};
  pairCount_++;
  return id;
}

const Bpe::WordSlot* Bpe::findWord(std::string_view word, uint64_t hash) const {
  const size_t mask = slots_.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    const WordSlot& s = slots_[i];
    if (s.len == 0) return nullptr;
    if (s.hash == hash && s.len == word.size() && std::memcmp(s.len <= kInline ? s.text : words_.data() + s.key, word.data(), word.size()) == 0)
      return &s;
  }
}

void Bpe::growWords() {
  std::vector<WordSlot> old(2 * slots_.size(), WordSlot{});
  old.swap(slots_);
  const size_t mask = slots_.size() - 1;
  for (const WordSlot& s : old)
    if (s.len) {
      size_t j = s.hash & mask;
      while (slots_[j].len) j = (j + 1) & mask;
      slots_[j] = s;
    }
}

void Bpe::addWord(std::string_view word, uint64_t hash, const std::vector<int32_t>& ids) {
  // A word past kLongWord bytes (a run without spaces) is merged each time: its text and ids would fill the cache.
  if (wordCount_ >= kCacheWords || word.size() > kLongWord) return;
  if (2 * (wordCount_ + 1) > slots_.size()) growWords();
  const size_t mask = slots_.size() - 1;
  size_t i = hash & mask;
  while (slots_[i].len) i = (i + 1) & mask;
  WordSlot& s = slots_[i];
  s = WordSlot{hash, (uint32_t)word.size(), 0, (uint32_t)cached_.size(), (uint32_t)ids.size(), {}};
  if (word.size() <= kInline) std::memcpy(s.text, word.data(), word.size());
  else {
    s.key = (uint32_t)words_.size();
    words_.append(word);
  }
  cached_.insert(cached_.end(), ids.begin(), ids.end());
  wordCount_++;
}

void Bpe::merge(std::string_view word, std::vector<int32_t>& t) {
  t.clear();
  std::string ch;
  for (size_t i = 0; i < word.size();) {
    const size_t n = std::min(seqLen((unsigned char)word[i]), word.size() - i);
    int32_t id = n == 1 ? ascii_[(unsigned char)word[i]] : -1;
    if (n > 1) {
      ch.assign(word.data() + i, n);
      auto f = lookup_.find(ch);
      if (f != lookup_.end()) id = f->second;
    }
    if (id >= 0) t.push_back(id);
    else
      for (size_t q = 0; q < n; q++) t.push_back((int32_t)(unsigned char)word[i + q] + 3);  // byte fallback: <0x00> is id 3
    i += n;
  }
  // merged_[i]: the piece t[i] and t[i + 1] make, or -1; a merge changes only its neighbours' entries.
  merged_.resize(t.size() ? t.size() - 1 : 0);
  for (size_t i = 0; i + 1 < t.size(); i++) merged_[i] = pair(t[i], t[i + 1]);
  for (;;) {
    float best = -INFINITY;
    long at = -1;
    for (size_t i = 0; i < merged_.size(); i++) {
      const int32_t m = merged_[i];
      if (m >= 0 && scores_[m] > best) {
        best = scores_[m];
        at = (long)i;
      }
    }
    if (at < 0) break;
    t[at] = merged_[at];
    t.erase(t.begin() + at + 1);
    merged_.erase(merged_.begin() + at);
    if (at > 0) merged_[at - 1] = pair(t[at - 1], t[at]);
    if ((size_t)at < merged_.size()) merged_[at] = pair(t[at], t[at + 1]);
  }
}

void Bpe::encode(std::string_view text, bool prefix, std::vector<int32_t>& out) {
  if (prefix && !text.empty()) {
    prefixed_.assign(1, ' ');
    prefixed_.append(text);
    text = prefixed_;
  }
  // Words: the text before the first space (when not empty), then each space with what follows it up to the next.
  // They are found kAhead at a time and their slots fetched ahead, so the table's cache misses overlap.
  constexpr size_t kAhead = 16;
  struct Word {
    size_t start, len;
    uint64_t hash;
  } ahead[kAhead];
  size_t start = 0;
  while (start < text.size()) {
    size_t m = 0;
    for (; m < kAhead && start < text.size(); m++) {
      size_t end = text.find(' ', start + 1);
      if (start == 0 && text[0] != ' ') end = text.find(' ');
      if (end == std::string_view::npos) end = text.size();
      ahead[m] = Word{start, end - start, hashBytes(text.substr(start, end - start))};
      __builtin_prefetch(&slots_[ahead[m].hash & (slots_.size() - 1)]);
      start = end;
    }
    for (size_t q = 0; q < m; q++) {
      const std::string_view word = text.substr(ahead[q].start, ahead[q].len);
      if (const WordSlot* s = findWord(word, ahead[q].hash)) {
        out.insert(out.end(), cached_.begin() + s->at, cached_.begin() + s->at + s->n);
        continue;
      }
      merge(word, scratch_);
      out.insert(out.end(), scratch_.begin(), scratch_.end());
      addWord(word, ahead[q].hash, scratch_);
    }
  }
}

}  // namespace sdl
