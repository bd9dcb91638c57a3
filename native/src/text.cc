#include "text.h"

#include <charconv>
#include <cmath>

namespace sdl {

namespace {

void appendInt(std::string& s, long long v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  s.append(buf, r.ptr);
}

}  // namespace

bool appendRound4(std::string& s, float v) {
  // Math.round: the nearest integer, halves towards +infinity. x - floor(x) is exact below 2^52, so the test is too.
  const double x = (double)v * 1e4;
  if (!std::isfinite(x)) return false;
  double r = std::floor(x);
  if (x - r >= 0.5) r += 1;
  if (!(std::fabs(r) < 1e15)) return false;
  // String() of the quotient, from the integer count of ten-thousandths: the same digits (util/format.ts round4Text).
  const long long q = (long long)r;
  if (q == 0) {
    s += '0';  // also -0, which String() writes as "0"
    return true;
  }
  const long long a = q < 0 ? -q : q;
  if (q < 0) s += '-';
  appendInt(s, a / 10000);
  int frac = (int)(a % 10000);
  if (frac == 0) return true;
  char digits[5] = {char('0' + frac / 1000), char('0' + frac / 100 % 10), char('0' + frac / 10 % 10), char('0' + frac % 10), 0};
  int end = 4;
  while (digits[end - 1] == '0') end--;
  s += '.';
  s.append(digits, end);
  return true;
}

void contextTexts(const int32_t* ctxTok, const float* ctxAct, const int32_t* ctxLen, int width, const int32_t* slots, int n, std::string& text,
                  int32_t* ends, uint8_t* exotic) {
  for (int q = 0; q < n; q++) {
    const long o = (long)slots[q] * width;
    const int len = ctxLen[slots[q]];
    text += '[';
    for (int c = 0; c < len; c++) {
      if (c) text += ',';
      appendInt(text, ctxTok[o + c]);
    }
    text += ']';
    ends[2 * q] = (int32_t)text.size();
    const size_t mark = text.size();
    bool ok = true;
    text += '[';
    for (int c = 0; c < len && ok; c++) {
      if (c) text += ',';
      ok = appendRound4(text, ctxAct[o + c]);
    }
    text += ']';
    if (!ok) text.resize(mark);
    exotic[q] = ok ? 0 : 1;
    ends[2 * q + 1] = (int32_t)text.size();
  }
}

}  // namespace sdl
