#include "bpe.h"

#include <cmath>
#include <utility>

namespace sdl {

namespace {
constexpr size_t kCacheWords = 200000;
// Pairs looked up, kept at most this many (~40 MB): a large vocabulary over a long harvest meets ever more of them,
// and the cache is only a cache.
constexpr size_t kCachePairs = 1u << 20;

// Bytes in the UTF-8 sequence a lead byte starts (well-formed input: continuation bytes never lead).
inline size_t seqLen(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }
}  // namespace

Bpe::Bpe(std::vector<std::string> vocab, std::vector<float> scores) : vocab_(std::move(vocab)), scores_(std::move(scores)) {
  lookup_.reserve(vocab_.size() * 2);
  for (size_t i = 0; i < vocab_.size(); i++) lookup_.emplace(vocab_[i], (int32_t)i);  // the first id of a text wins
}

int32_t Bpe::pair(int32_t a, int32_t b) {
  const uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  auto it = pairs_.find(key);
  if (it != pairs_.end()) return it->second;
  std::string s;
  s.reserve(vocab_[a].size() + vocab_[b].size());
  s += vocab_[a];
  s += vocab_[b];
  auto f = lookup_.find(s);
  const int32_t id = f == lookup_.end() ? -1 : f->second;
  if (pairs_.size() >= kCachePairs) pairs_.clear();
  pairs_.emplace(key, id);
  return id;
}

void Bpe::merge(std::string_view word, std::vector<int32_t>& t) {
  t.clear();
  std::string ch;
  for (size_t i = 0; i < word.size();) {
    const size_t n = std::min(seqLen((unsigned char)word[i]), word.size() - i);
    ch.assign(word.data() + i, n);
    auto f = lookup_.find(ch);
    if (f != lookup_.end()) t.push_back(f->second);
    else
      for (size_t q = 0; q < n; q++) t.push_back((int32_t)(unsigned char)word[i + q] + 3);  // byte fallback: <0x00> is id 3
    i += n;
  }
  for (;;) {
    float best = -INFINITY;
    long at = -1;
    int32_t id = -1;
    for (size_t i = 0; i + 1 < t.size(); i++) {
      const int32_t m = pair(t[i], t[i + 1]);
      if (m >= 0 && scores_[m] > best) {
        best = scores_[m];
        at = (long)i;
        id = m;
      }
    }
    if (at < 0) break;
    t[at] = id;
    t.erase(t.begin() + at + 1);
  }
}

void Bpe::encode(std::string_view text, bool prefix, std::vector<int32_t>& out) {
  std::string owned;
  if (prefix && !text.empty()) {
    owned.reserve(text.size() + 1);
    owned += ' ';
    owned += text;
    text = owned;
  }
  // Words: the text before the first space (when not empty), then each space with what follows it up to the next.
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(' ', start + 1);
    if (start == 0 && text[0] != ' ') end = text.find(' ');
    if (end == std::string_view::npos) end = text.size();
    const std::string_view word = text.substr(start, end - start);
    start = end;
    // The same std::string key type as the map, built once per word: a lookup by string_view needs C++20.
    std::string key(word);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      out.insert(out.end(), cached_.begin() + it->second.at, cached_.begin() + it->second.at + it->second.n);
      continue;
    }
    merge(word, scratch_);
    out.insert(out.end(), scratch_.begin(), scratch_.end());
    if (cache_.size() < kCacheWords) {
      cache_.emplace(std::move(key), Span{(uint32_t)cached_.size(), (uint32_t)scratch_.size()});
      cached_.insert(cached_.end(), scratch_.begin(), scratch_.end());
    }
  }
}

}  // namespace sdl
