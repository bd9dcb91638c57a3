// The index's example contexts as JSON text: what the writer thread (src/index/db-worker.ts) stores in the examples
// tables' context_tokens and context_acts columns. The TypeScript reference is src/index/context-text.ts (with
// util/format.ts round4Text); a test holds the two equal.
#pragma once
#include <cstdint>
#include <string>

namespace sdl {

// Appends JavaScript's String(Math.round(v * 1e4) / 1e4) for a float32 v: "0", "-1.25", "3.0001". Returns false, with
// nothing appended, where that text would need more than the integer path keeps (|Math.round(v * 1e4)| >= 1e15, or v
// not finite): the caller formats such a value in TypeScript.
bool appendRound4(std::string& s, float v);

// Contexts of `n` examples, slot slots[q] each: ctxLen[slot] tokens and activations from row slot of the [*, width]
// arrays, written one after another into `text` as "[t0,t1,...]" then "[a0,a1,...]"; ends[2q] and ends[2q + 1] are
// where the two end. exotic[q] = 1 (the activations' text left empty) where a value cannot be written here.
void contextTexts(const int32_t* ctxTok, const float* ctxAct, const int32_t* ctxLen, int width, const int32_t* slots, int n, std::string& text,
                  int32_t* ends, uint8_t* exotic);

}  // namespace sdl
