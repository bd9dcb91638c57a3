// Node-API bindings for sdlkit's CPU kernels. Tensors cross the boundary as Float32Arrays owned by
// JavaScript (no copies); the engine keeps only its workspace.
#define NAPI_VERSION 8
#include <node_api.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "bpe.h"
#include "checksum.h"
#include "half.h"
#include "finite.h"
#include "clt.h"
#include "screen.h"
#include "engine.h"
#include "index_stats.h"
#include "peak.h"
#include "gemm.h"
#include "simd.h"
#include "text.h"

namespace {

using sdl::Engine;

struct JsError {
  std::string msg;
};

#define CHECK_NAPI(call)                                      \
  do {                                                        \
    if ((call) != napi_ok) throw JsError{"N-API call failed: " #call}; \
  } while (0)

napi_value get(napi_env env, napi_value obj, const char* name) {
  napi_value v;
  CHECK_NAPI(napi_get_named_property(env, obj, name, &v));
  return v;
}

bool isUndefined(napi_env env, napi_value v) {
  napi_valuetype t;
  CHECK_NAPI(napi_typeof(env, v, &t));
  return t == napi_undefined || t == napi_null;
}

double num(napi_env env, napi_value v, const char* what) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) throw JsError{std::string(what) + " must be a number"};
  return d;
}

// An integer argument within [lo, hi]: bad sizes become exceptions here, never out-of-range loops or
// divisions by zero in the kernels.
int count(napi_env env, napi_value v, const char* what, long lo, long hi = 1L << 31) {
  double d = num(env, v, what);
  if (!(d == (double)(long)d) || d < (double)lo || d > (double)hi) {
    throw JsError{std::string(what) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(d)};
  }
  return (int)d;
}

double numProp(napi_env env, napi_value obj, const char* name, double def) {
  napi_value v = get(env, obj, name);
  return isUndefined(env, v) ? def : num(env, v, name);
}

bool boolProp(napi_env env, napi_value obj, const char* name) {
  napi_value v = get(env, obj, name);
  if (isUndefined(env, v)) return false;
  bool b;
  CHECK_NAPI(napi_get_value_bool(env, v, &b));
  return b;
}

// `screen`: 0 never, 1 where it is faster (the default), 2 wherever the processor can (see Config::screen).
int screenProp(napi_env env, napi_value obj) {
  napi_value v = get(env, obj, "screen");
  return isUndefined(env, v) ? 1 : count(env, v, "screen", 0, 2);
}

struct TypedArray {
  napi_typedarray_type type;
  size_t length;
  void* data;
};

TypedArray typedInfo(napi_env env, napi_value v, const char* what) {
  bool is;
  CHECK_NAPI(napi_is_typedarray(env, v, &is));
  if (!is) throw JsError{std::string(what) + " must be a typed array"};
  TypedArray a;
  napi_value ab;
  size_t off;
  CHECK_NAPI(napi_get_typedarray_info(env, v, &a.type, &a.length, &a.data, &ab, &off));
  return a;
}

template <class T>
T* typed(napi_env env, napi_value v, napi_typedarray_type want, size_t minLen, const char* what, bool optional = false) {
  if (optional && isUndefined(env, v)) return nullptr;
  TypedArray a = typedInfo(env, v, what);
  if (a.type != want) throw JsError{std::string(what) + " has the wrong element type"};
  if (a.length < minLen) throw JsError{std::string(what) + " is too short: " + std::to_string(a.length) + " < " + std::to_string(minLen)};
  return static_cast<T*>(a.data);
}

float* f32(napi_env env, napi_value v, size_t n, const char* what, bool optional = false) {
  return typed<float>(env, v, napi_float32_array, n, what, optional);
}

napi_value mkNum(napi_env env, double d) {
  napi_value v;
  CHECK_NAPI(napi_create_double(env, d, &v));
  return v;
}

void setNum(napi_env env, napi_value obj, const char* name, double d) { CHECK_NAPI(napi_set_named_property(env, obj, name, mkNum(env, d))); }

template <class F>
napi_value guard(napi_env env, F&& f) {
  try {
    return f();
  } catch (const JsError& e) {
    napi_throw_error(env, nullptr, e.msg.c_str());
  } catch (const std::bad_alloc&) {
    napi_throw_error(env, nullptr, "sdlkit native kernels: out of memory");
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, e.what());
  }
  return nullptr;
}

// The first n arguments (those not passed are undefined); fewer than `required` (default n) is an error.
std::vector<napi_value> args(napi_env env, napi_callback_info info, size_t n, napi_value* self = nullptr, size_t required = SIZE_MAX) {
  std::vector<napi_value> a(n);
  size_t got = n;
  CHECK_NAPI(napi_get_cb_info(env, info, &got, a.data(), self, nullptr));
  if (got < std::min(n, required)) throw JsError{"expected " + std::to_string(std::min(n, required)) + " arguments"};
  return a;
}

Engine* unwrap(napi_env env, napi_value self) {
  void* p;
  CHECK_NAPI(napi_unwrap(env, self, &p));
  return static_cast<Engine*>(p);
}

// rowsOptional: gradients of a deferRows step, which need no W_encT or W_dec.
sdl::Tensors tensors(napi_env env, Engine* e, napi_value obj, const char* what, bool rowsOptional = false) {
  const sdl::Config& c = e->config();
  const size_t m = c.dSae;
  sdl::Tensors t;
  t.W_encT = f32(env, get(env, obj, "W_encT"), m * c.dIn, "W_encT", rowsOptional);
  t.b_enc = f32(env, get(env, obj, "b_enc"), m, "b_enc");
  t.W_dec = c.tied ? t.W_encT : f32(env, get(env, obj, "W_dec"), m * c.dOut, "W_dec", rowsOptional);
  t.b_dec = f32(env, get(env, obj, "b_dec"), c.dOut, "b_dec");
  t.log_threshold = f32(env, get(env, obj, "log_threshold"), m, "log_threshold", c.act != sdl::JUMPRELU);
  (void)what;
  return t;
}

napi_value EngineNew(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 1, &self);
    napi_value o = a[0];
    sdl::Config c;
    c.dIn = count(env, get(env, o, "dIn"), "dIn", 1);
    c.dOut = count(env, get(env, o, "dOut"), "dOut", 1);
    c.dSae = count(env, get(env, o, "dSae"), "dSae", 1);
    c.act = (sdl::Activation)count(env, get(env, o, "activation"), "activation", 0, 4);
    c.k = (int)numProp(env, o, "k", 0);
    bool topkFamily = c.act == sdl::TOPK || c.act == sdl::BATCHTOPK || c.act == sdl::MATRYOSHKA;
    if (topkFamily && (c.k < 1 || c.k > c.dSae)) throw JsError{"k must be in [1, dSae], got " + std::to_string(c.k)};
    c.applyBDec = boolProp(env, o, "applyBDec");
    c.noBias = boolProp(env, o, "noBias");
    c.tied = boolProp(env, o, "tied");
    c.screen = screenProp(env, o);
    c.lean = boolProp(env, o, "lean");
    napi_value w = get(env, o, "widths");
    if (!isUndefined(env, w)) {
      uint32_t n;
      CHECK_NAPI(napi_get_array_length(env, w, &n));
      for (uint32_t i = 0; i < n; i++) {
        napi_value x;
        CHECK_NAPI(napi_get_element(env, w, i, &x));
        c.widths.push_back(count(env, x, "widths", 1, c.dSae));
      }
    }
    if (c.act == sdl::MATRYOSHKA && (c.widths.empty() || c.widths.back() != c.dSae)) throw JsError{"matryoshka widths must end at dSae"};
    if (c.tied && c.dIn != c.dOut) throw JsError{"a tied dictionary needs dIn == dOut"};
    for (size_t i = 1; i < c.widths.size(); i++) if (c.widths[i] <= c.widths[i - 1]) throw JsError{"matryoshka widths must increase"};
    int threads = (int)numProp(env, o, "threads", 1);
    if (threads < 1 || threads > 1024) throw JsError{"threads must be in [1, 1024]"};
    auto* e = new Engine(c, threads);
    CHECK_NAPI(napi_wrap(env, self, e, [](napi_env, void* p, void*) { delete static_cast<Engine*>(p); }, nullptr, nullptr));
    return self;
  });
}

// step(params, grads, X, Y, B, opts, fired) -> { loss, mse, sparsityLoss, auxLoss, anchorLoss, l0, minSelected, dense, nnz, selection, rowsSq, dotsFused, denseBytes }
napi_value EngineStep(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 7, &self);
    Engine* e = unwrap(env, self);
    const sdl::Config& c = e->config();
    napi_value o = a[5];
    sdl::StepOptions so;
    so.deferRows = boolProp(env, o, "deferRows");
    so.projectDec = boolProp(env, o, "projectDec");
    so.rowsNorm = !boolProp(env, o, "noRowsNorm");
    sdl::Tensors p = tensors(env, e, a[0], "params"), g = tensors(env, e, a[1], "grads", so.deferRows);
    int B = count(env, a[4], "B", 1);
    const float* X = f32(env, a[2], (size_t)B * c.dIn, "X");
    const float* Y = f32(env, a[3], (size_t)B * c.dOut, "Y");
    so.sparsity = (float)numProp(env, o, "sparsity", 0);
    so.bandwidth = (float)numProp(env, o, "bandwidth", 1);
    so.auxkCoefficient = (float)numProp(env, o, "auxkCoefficient", 0);
    so.auxkK = (int)numProp(env, o, "auxkK", 0);
    so.denseAbove = (float)numProp(env, o, "denseAbove", sdl::kDenseAbove);
    so.decodeBlock = (int)numProp(env, o, "decodeBlock", 0);
    so.rowBlock = (int)numProp(env, o, "rowBlock", 0);
    so.dotsApart = boolProp(env, o, "dotsApart");
    so.storedFallback = boolProp(env, o, "storedFallback");
    so.dead = typed<uint8_t>(env, get(env, o, "dead"), napi_uint8_array, c.dSae, "dead", true);
    so.anchorK = (int)numProp(env, o, "anchorK", 0);
    if (so.anchorK > 0) {
      so.anchorEnc = f32(env, get(env, o, "anchorEnc"), (size_t)so.anchorK * c.dIn, "anchorEnc");
      so.anchorDec = f32(env, get(env, o, "anchorDec"), (size_t)so.anchorK * c.dOut, "anchorDec");
      so.anchorWeight = (float)numProp(env, o, "anchorWeight", 0);
    }
    float* fired = f32(env, a[6], c.dSae, "fired");
    sdl::StepResult r = e->step(p, g, X, Y, B, so, fired);
    napi_value out;
    CHECK_NAPI(napi_create_object(env, &out));
    setNum(env, out, "loss", r.loss);
    setNum(env, out, "mse", r.mse);
    setNum(env, out, "sparsityLoss", r.sparsityLoss);
    setNum(env, out, "auxLoss", r.auxLoss);
    setNum(env, out, "anchorLoss", r.anchorLoss);
    setNum(env, out, "l0", r.l0);
    setNum(env, out, "minSelected", r.minSelected);
    setNum(env, out, "dense", r.dense ? 1 : 0);
    setNum(env, out, "nnz", (double)r.nnz);
    setNum(env, out, "selection", r.selection);
    setNum(env, out, "rowsSq", r.rowsSq);
    setNum(env, out, "dotsFused", r.dotsFused ? 1 : 0);
    setNum(env, out, "denseBytes", r.denseBytes);
    return out;
  });
}

// applyRows(params, X, mEnc, vEnc, mDec, vDec, lr, gscale, beta1, beta2, eps, t, normalize): after a deferRows step,
// X the array that step was given (the engine checks it is the same).
napi_value EngineApplyRows(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 13, &self);
    Engine* e = unwrap(env, self);
    const sdl::Config& c = e->config();
    sdl::Tensors p = tensors(env, e, a[0], "params");
    const size_t ne = (size_t)c.dSae * c.dIn, nd = (size_t)c.dSae * c.dOut;
    bool normalize;
    CHECK_NAPI(napi_get_value_bool(env, a[12], &normalize));
    e->applyRows(p, f32(env, a[1], 0, "X"), f32(env, a[2], ne, "mEnc"), f32(env, a[3], ne, "vEnc"), f32(env, a[4], nd, "mDec"), f32(env, a[5], nd, "vDec"),
                 (float)num(env, a[6], "lr"), (float)num(env, a[7], "gscale"), (float)num(env, a[8], "beta1"), (float)num(env, a[9], "beta2"),
                 (float)num(env, a[10], "eps"), (int)num(env, a[11], "t"), normalize);
    return nullptr;
  });
}

napi_value copyOut(napi_env env, const void* src, size_t bytes, napi_typedarray_type t, size_t len) {
  void* data;
  napi_value ab, arr;
  CHECK_NAPI(napi_create_arraybuffer(env, bytes, &data, &ab));
  if (bytes) memcpy(data, src, bytes);
  CHECK_NAPI(napi_create_typedarray(env, t, len, ab, 0, &arr));
  return arr;
}

// An array of `into` (forward's last argument) to write n elements of type t into: its data, buffer and offset, or
// false when `into` has no such array of at least n elements (a new one is made instead).
bool intoArray(napi_env env, napi_value into, const char* name, napi_typedarray_type t, size_t n, void** data, napi_value* ab, size_t* off) {
  if (isUndefined(env, into)) return false;
  napi_value v;
  CHECK_NAPI(napi_get_named_property(env, into, name, &v));  // undefined where `into` has none: not a typed array
  bool is = false;
  CHECK_NAPI(napi_is_typedarray(env, v, &is));
  if (!is) return false;
  napi_typedarray_type type;
  size_t len;
  CHECK_NAPI(napi_get_typedarray_info(env, v, &type, &len, data, ab, off));
  return type == t && len >= n;
}

// An array of n elements of type t, over `into`'s array of that name where it is long enough (a view of its first n),
// else new; *data is where its elements go.
napi_value outArray(napi_env env, napi_value into, const char* name, napi_typedarray_type t, size_t elem, size_t n, void** data) {
  napi_value ab, arr;
  size_t off = 0;
  if (!intoArray(env, into, name, t, n, data, &ab, &off)) CHECK_NAPI(napi_create_arraybuffer(env, elem * n, data, &ab));
  CHECK_NAPI(napi_create_typedarray(env, t, n, ab, off, &arr));
  return arr;
}

// { count: Int32Array[n], idx, val (rows back to back, without the gaps the engine may leave), yhat? }, the first three
// written into `into`'s arrays of those names where they are long enough (see outArray), else new.
napi_value sparseOut(napi_env env, const sdl::Sparse& sp, int n, const std::vector<float>* yhat, napi_value into) {
  napi_value out;
  CHECK_NAPI(napi_create_object(env, &out));
  void *dc, *di, *dv;
  napi_value ac = outArray(env, into, "count", napi_int32_array, sizeof(int32_t), n, &dc);
  napi_value ai = outArray(env, into, "idx", napi_int32_array, sizeof(int32_t), sp.nnz, &di);
  napi_value av = outArray(env, into, "val", napi_float32_array, sizeof(float), sp.nnz, &dv);
  if (n) memcpy(dc, sp.count.data(), sizeof(int32_t) * n);
  long o = 0;
  for (int b = 0; b < n; b++) {
    memcpy(static_cast<int32_t*>(di) + o, sp.idx.data() + sp.start[b], sizeof(int32_t) * sp.count[b]);
    memcpy(static_cast<float*>(dv) + o, sp.val.data() + sp.start[b], sizeof(float) * sp.count[b]);
    o += sp.count[b];
  }
  CHECK_NAPI(napi_set_named_property(env, out, "count", ac));
  CHECK_NAPI(napi_set_named_property(env, out, "idx", ai));
  CHECK_NAPI(napi_set_named_property(env, out, "val", av));
  if (yhat) CHECK_NAPI(napi_set_named_property(env, out, "yhat", copyOut(env, yhat->data(), sizeof(float) * yhat->size(), napi_float32_array, yhat->size())));
  return out;
}

// forward(params, X, n, threshold, wantYhat | yhat, into?) -> { count: Int32Array[n], idx: Int32Array, val: Float32Array,
// yhat?: Float32Array }. `into` ({ count, idx, val }): arrays to write the rows into where long enough (sparseOut), for
// a pass calling forward chunk after chunk; the engine then keeps its own output buffers between the calls too.
napi_value EngineForward(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 6, &self, 5);
    Engine* e = unwrap(env, self);
    const sdl::Config& c = e->config();
    sdl::Tensors p = tensors(env, e, a[0], "params");
    int n = count(env, a[2], "n", 1);
    const float* X = f32(env, a[1], (size_t)n * c.dIn, "X");
    float threshold = (float)num(env, a[3], "threshold");
    // a[4]: false, true (a new yhat array), or a Float32Array of at least n x dOut to write yhat into (an
    // evaluation reuses one, instead of leaving each chunk's reconstruction behind for the collector).
    bool isArray = false;
    CHECK_NAPI(napi_is_typedarray(env, a[4], &isArray));
    bool wantYhat = isArray;
    if (!isArray) CHECK_NAPI(napi_get_value_bool(env, a[4], &wantYhat));
    sdl::Sparse local;
    sdl::Sparse& sp = isUndefined(env, a[5]) ? local : e->passOut;
    float* into = isArray ? f32(env, a[4], (size_t)n * c.dOut, "yhat") : nullptr;
    std::vector<float> yhat(wantYhat && !into ? (size_t)n * c.dOut : 0);
    e->forward(p, X, n, threshold, sp, into ? into : wantYhat ? yhat.data() : nullptr);
    napi_value out = sparseOut(env, sp, n, wantYhat && !into ? &yhat : nullptr, a[5]);
    if (into) CHECK_NAPI(napi_set_named_property(env, out, "yhat", a[4]));
    return out;
  });
}

// projectDecoderGrad(W, g)
napi_value EngineProject(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 2, &self);
    Engine* e = unwrap(env, self);
    size_t n = (size_t)e->config().dSae * e->config().dOut;
    e->projectDecoderGrad(f32(env, a[0], n, "W"), f32(env, a[1], n, "g"));
    return nullptr;
  });
}

// normalizeRows(W, d)
napi_value EngineNormalize(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 2, &self);
    Engine* e = unwrap(env, self);
    int d = count(env, a[1], "d", 1);
    e->normalizeRows(f32(env, a[0], (size_t)e->config().dSae * d, "W"), d);
    return nullptr;
  });
}

// The optimiser's methods of Engine and Clt, on the object's pool (Unwrap: unwrap or unwrapClt).
// sumSquares(x) -> number.
template <auto Unwrap>
napi_value SumSquaresOf(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 1, &self);
    TypedArray x = typedInfo(env, a[0], "x");
    if (x.type != napi_float32_array) throw JsError{"sumSquares needs a Float32Array"};
    return mkNum(env, sdl::sumSquares(Unwrap(env, self)->pool(), static_cast<float*>(x.data), (long)x.length));
  });
}

// adam(p, g, m, v, lr, gscale, beta1, beta2, eps, t).
template <auto Unwrap>
napi_value AdamOf(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 10, &self);
    const size_t len = typedInfo(env, a[0], "p").length;
    float* p = f32(env, a[0], len, "p");
    sdl::adamUpdate(Unwrap(env, self)->pool(), p, f32(env, a[1], len, "g"), f32(env, a[2], len, "m"), f32(env, a[3], len, "v"), (long)len,
                    (float)num(env, a[4], "lr"), (float)num(env, a[5], "gscale"), (float)num(env, a[6], "beta1"), (float)num(env, a[7], "beta2"),
                    (float)num(env, a[8], "eps"), (int)num(env, a[9], "t"));
    return nullptr;
  });
}

// adamUnitRows(p, g, m, v, lr, gscale, beta1, beta2, eps, t, d): Adam on rows of width d, each renormalised after.
napi_value EngineAdamUnitRows(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 11, &self);
    const size_t len = typedInfo(env, a[0], "p").length;
    const int d = count(env, a[10], "d", 1);
    if (len % d) throw JsError{"adamUnitRows: p's length is not a multiple of the row width d"};
    sdl::adamUnitRows(unwrap(env, self)->pool(), f32(env, a[0], len, "p"), f32(env, a[1], len, "g"), f32(env, a[2], len, "m"), f32(env, a[3], len, "v"),
                      (long)(len / d), d, (float)num(env, a[4], "lr"), (float)num(env, a[5], "gscale"), (float)num(env, a[6], "beta1"),
                      (float)num(env, a[7], "beta2"), (float)num(env, a[8], "eps"), (int)num(env, a[9], "t"));
    return nullptr;
  });
}

// ---- Clt: cross-layer (and skip) transcoders.

sdl::Clt* unwrapClt(napi_env env, napi_value self) {
  void* p;
  CHECK_NAPI(napi_unwrap(env, self, &p));
  return static_cast<sdl::Clt*>(p);
}

sdl::CltTensors cltTensors(napi_env env, sdl::Clt* e, napi_value obj) {
  const sdl::CltConfig& c = e->config();
  const size_t M = (size_t)c.L * c.n;
  sdl::CltTensors t;
  t.W_encT = f32(env, get(env, obj, "W_encT"), M * c.dI, "W_encT");
  t.b_enc = f32(env, get(env, obj, "b_enc"), M, "b_enc");
  t.W_dec = f32(env, get(env, obj, "W_dec"), (size_t)e->decSize(), "W_dec");
  t.b_dec = f32(env, get(env, obj, "b_dec"), (size_t)c.L * c.dO, "b_dec");
  t.log_threshold = f32(env, get(env, obj, "log_threshold"), M, "log_threshold", c.act != sdl::JUMPRELU);
  t.W_skip = f32(env, get(env, obj, "W_skip"), (size_t)c.L * c.dI * c.dO, "W_skip", !c.skip);
  return t;
}

// new Clt({ L, dIn, dOut, n, activation, k, skip, threads }): dIn/dOut per layer, n latents per layer.
napi_value CltNew(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 1, &self);
    napi_value o = a[0];
    sdl::CltConfig c;
    c.L = count(env, get(env, o, "L"), "L", 1, 4096);
    c.dI = count(env, get(env, o, "dIn"), "dIn", 1);
    c.dO = count(env, get(env, o, "dOut"), "dOut", 1);
    c.n = count(env, get(env, o, "n"), "n", 1);
    c.act = (sdl::Activation)count(env, get(env, o, "activation"), "activation", 0, 3);
    c.k = (int)numProp(env, o, "k", 0);
    if ((c.act == sdl::TOPK || c.act == sdl::BATCHTOPK) && (c.k < 1 || c.k > c.n)) throw JsError{"k must be in [1, n], got " + std::to_string(c.k)};
    c.skip = boolProp(env, o, "skip");
    c.screen = screenProp(env, o);
    if ((double)c.L * c.n * (c.dI + (double)c.L * c.dO) > 4e9) throw JsError{"the CLT's weights would exceed 4e9 values"};
    int threads = (int)numProp(env, o, "threads", 1);
    if (threads < 1 || threads > 1024) throw JsError{"threads must be in [1, 1024]"};
    auto* e = new sdl::Clt(c, threads);
    CHECK_NAPI(napi_wrap(env, self, e, [](napi_env, void* p, void*) { delete static_cast<sdl::Clt*>(p); }, nullptr, nullptr));
    return self;
  });
}

// step(params, grads, X, Y, B, opts, fired) -> { loss, mse, sparsityLoss, auxLoss, l0, nnz, dense, selection, minSelected: Float32Array[L] }
napi_value CltStep(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 7, &self);
    sdl::Clt* e = unwrapClt(env, self);
    const sdl::CltConfig& c = e->config();
    sdl::CltTensors p = cltTensors(env, e, a[0]), g = cltTensors(env, e, a[1]);
    int B = count(env, a[4], "B", 1);
    const float* X = f32(env, a[2], (size_t)B * c.L * c.dI, "X");
    const float* Y = f32(env, a[3], (size_t)B * c.L * c.dO, "Y");
    napi_value o = a[5];
    sdl::CltStepOptions so;
    so.sparsity = (float)numProp(env, o, "sparsity", 0);
    so.bandwidth = (float)numProp(env, o, "bandwidth", 1);
    so.auxkCoefficient = (float)numProp(env, o, "auxkCoefficient", 0);
    so.auxkK = (int)numProp(env, o, "auxkK", 0);
    so.dead = typed<uint8_t>(env, get(env, o, "dead"), napi_uint8_array, (size_t)e->latents(), "dead", true);
    so.denseAbove = (float)numProp(env, o, "denseAbove", sdl::kDenseAbove);
    so.storedFallback = boolProp(env, o, "storedFallback");
    float* fired = f32(env, a[6], (size_t)e->latents(), "fired");
    sdl::StepResult r = e->step(p, g, X, Y, B, so, fired);
    napi_value out;
    CHECK_NAPI(napi_create_object(env, &out));
    setNum(env, out, "loss", r.loss);
    setNum(env, out, "mse", r.mse);
    setNum(env, out, "sparsityLoss", r.sparsityLoss);
    setNum(env, out, "auxLoss", r.auxLoss);
    setNum(env, out, "l0", r.l0);
    setNum(env, out, "nnz", (double)r.nnz);
    setNum(env, out, "dense", r.dense ? 1 : 0);
    setNum(env, out, "selection", r.selection);
    const auto& kth = e->minSelected();
    CHECK_NAPI(napi_set_named_property(env, out, "minSelected", copyOut(env, kth.data(), sizeof(float) * kth.size(), napi_float32_array, kth.size())));
    return out;
  });
}

// forward(params, X, n, theta: Float32Array[L n] | undefined, wantYhat, into?) -> { count, idx, val, yhat? } (`into`: as
// EngineForward's)
napi_value CltForward(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 6, &self, 5);
    sdl::Clt* e = unwrapClt(env, self);
    const sdl::CltConfig& c = e->config();
    sdl::CltTensors p = cltTensors(env, e, a[0]);
    int n = count(env, a[2], "n", 1);
    const float* X = f32(env, a[1], (size_t)n * c.L * c.dI, "X");
    const float* theta = f32(env, a[3], (size_t)e->latents(), "theta", c.act == sdl::RELU || c.act == sdl::TOPK);
    bool wantYhat;
    CHECK_NAPI(napi_get_value_bool(env, a[4], &wantYhat));
    sdl::Sparse local;
    sdl::Sparse& sp = isUndefined(env, a[5]) ? local : e->passOut;
    std::vector<float> yhat(wantYhat ? (size_t)n * c.L * c.dO : 0);
    e->forward(p, X, n, theta, sp, wantYhat ? yhat.data() : nullptr);
    return sparseOut(env, sp, n, wantYhat ? &yhat : nullptr, a[5]);
  });
}

napi_value CltProject(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 2, &self);
    sdl::Clt* e = unwrapClt(env, self);
    e->projectDecoderGrad(f32(env, a[0], (size_t)e->decSize(), "W"), f32(env, a[1], (size_t)e->decSize(), "g"));
    return nullptr;
  });
}

napi_value CltNormalize(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 1, &self);
    sdl::Clt* e = unwrapClt(env, self);
    e->normalizeDecoder(f32(env, a[0], (size_t)e->decSize(), "W"));
    return nullptr;
  });
}

// gemm(M, N, K, A, ars, acs, B, brs, bcs, C, ldc, accumulate, threads): for tests and benchmarks.
// The pool of the stateless calls (gemm, nearestRows), made again when another thread count is asked for. One per
// calling thread: the index calls them from a worker thread while the main thread may call them too.
sdl::Pool& sharedPool(int threads) {
  static thread_local std::unique_ptr<sdl::Pool> pool;
  if (!pool || pool->size() != threads) pool.reset(new sdl::Pool(threads));
  return *pool;
}

napi_value Gemm(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    auto a = args(env, info, 13);
    int M = count(env, a[0], "M", 0), N = count(env, a[1], "N", 0), K = count(env, a[2], "K", 0);
    long ars = (long)num(env, a[4], "ars"), acs = (long)num(env, a[5], "acs"), brs = (long)num(env, a[7], "brs"), bcs = (long)num(env, a[8], "bcs");
    long ldc = (long)num(env, a[10], "ldc");
    size_t needA = (size_t)((M - 1) * ars + (K - 1) * acs + 1), needB = (size_t)((K - 1) * brs + (N - 1) * bcs + 1);
    bool acc;
    CHECK_NAPI(napi_get_value_bool(env, a[11], &acc));
    sdl::Pool& pool = sharedPool(count(env, a[12], "threads", 1, 1024));
    sdl::gemm(pool, M, N, K, sdl::View{f32(env, a[3], needA, "A"), ars, acs}, sdl::View{f32(env, a[6], needB, "B"), brs, bcs},
              f32(env, a[9], (size_t)(M - 1) * ldc + N, "C"), ldc, acc);
    return nullptr;
  });
}

// gemmChunkBytes(bytes?): the fused encoder's column-chunk budget (gemm.h), set when bytes is given; returns the
// value before. For tests (small chunks cross many of them) and benchmarks.
napi_value GemmChunkBytes(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    size_t argc = 1;
    napi_value a[1];
    CHECK_NAPI(napi_get_cb_info(env, info, &argc, a, nullptr, nullptr));
    napi_valuetype t = napi_undefined;
    if (argc >= 1) CHECK_NAPI(napi_typeof(env, a[0], &t));
    const size_t before = t == napi_undefined ? sdl::gemmChunkBytes() : sdl::setGemmChunkBytes((size_t)count(env, a[0], "bytes", 1));
    napi_value out;
    CHECK_NAPI(napi_create_double(env, (double)before, &out));
    return out;
  });
}

napi_value ScreenCopyBytes(napi_env env, napi_callback_info) {
  napi_value out;
  napi_create_double(env, (double)sdl::screenCopyBytes(), &out);
  return out;
}

napi_value ScreenChunkBytes(napi_env env, napi_callback_info) {
  napi_value out;
  napi_create_double(env, (double)sdl::screenChunkBytes(), &out);
  return out;
}

// Two outputs of len entries for a kernel to fill, ids (Int32Array) and values (Float32Array), handed back as one
// object (nearestRows, rowsLargest).
struct IdsAndValues {
  napi_env env;
  size_t len;
  int32_t* ids;
  float* values;
  napi_value idsBuffer, valuesBuffer;
  IdsAndValues(napi_env e, size_t n) : env(e), len(n) {
    void *pi, *pv;
    CHECK_NAPI(napi_create_arraybuffer(env, sizeof(int32_t) * len, &pi, &idsBuffer));
    CHECK_NAPI(napi_create_arraybuffer(env, sizeof(float) * len, &pv, &valuesBuffer));
    ids = static_cast<int32_t*>(pi);
    values = static_cast<float*>(pv);
  }
  napi_value object(const char* idsName, const char* valuesName) {
    napi_value ti, tv, out;
    CHECK_NAPI(napi_create_typedarray(env, napi_int32_array, len, idsBuffer, 0, &ti));
    CHECK_NAPI(napi_create_typedarray(env, napi_float32_array, len, valuesBuffer, 0, &tv));
    CHECK_NAPI(napi_create_object(env, &out));
    CHECK_NAPI(napi_set_named_property(env, out, idsName, ti));
    CHECK_NAPI(napi_set_named_property(env, out, valuesName, tv));
    return out;
  }
};

// nearestRows(unit: Float32Array [m, d], m, d, n, threads) -> { other: Int32Array [m, n], cosine: Float32Array [m, n] }
napi_value NearestRows(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    auto a = args(env, info, 5);
    int m = count(env, a[1], "m", 1), d = count(env, a[2], "d", 1), n = count(env, a[3], "n", 1);
    const float* unit = f32(env, a[0], (size_t)m * d, "unit");
    sdl::Pool& pool = sharedPool(count(env, a[4], "threads", 1, 1024));
    IdsAndValues out(env, (size_t)m * n);
    sdl::nearestRows(pool, unit, m, d, n, out.ids, out.values);
    return out.object("other", "cosine");
  });
}

// rowsLargest(C: Float32Array [rows, cols], rows, cols, n, negate, threads) -> { index: Int32Array [rows, n], value: Float32Array [rows, n] }
napi_value RowsLargest(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    auto a = args(env, info, 6);
    int rows = count(env, a[1], "rows", 0), cols = count(env, a[2], "cols", 0), n = count(env, a[3], "n", 1, 1 << 16);
    const float* C = f32(env, a[0], (size_t)rows * cols, "C");
    bool negate;
    CHECK_NAPI(napi_get_value_bool(env, a[4], &negate));
    sdl::Pool& pool = sharedPool(count(env, a[5], "threads", 1, 1024));
    IdsAndValues out(env, (size_t)rows * n);
    sdl::rowsLargest(pool, C, rows, cols, n, negate, out.ids, out.values);
    return out.object("index", "value");
  });
}

// probeGradient(L: Float32Array [n C], b, pos, wPos, wNeg: Float64Array [C], y: Int32Array [n], G: Float32Array [n C], gb: Float64Array [C])
//   writes G and adds to gb (index_stats.h)
napi_value ProbeGradient(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    auto a = args(env, info, 8);
    TypedArray yi = typedInfo(env, a[5], "y");
    const int n = (int)yi.length;
    TypedArray bi = typedInfo(env, a[1], "b");
    const int C = (int)bi.length;
    const float* L = f32(env, a[0], (size_t)n * C, "L");
    const double* b = typed<double>(env, a[1], napi_float64_array, C, "b");
    const double* pos = typed<double>(env, a[2], napi_float64_array, C, "pos");
    const double* wPos = typed<double>(env, a[3], napi_float64_array, C, "wPos");
    const double* wNeg = typed<double>(env, a[4], napi_float64_array, C, "wNeg");
    const int32_t* y = typed<int32_t>(env, a[5], napi_int32_array, n, "y");
    float* G = f32(env, a[6], (size_t)n * C, "G");
    double* gb = typed<double>(env, a[7], napi_float64_array, C, "gb");
    sdl::probeGradient(L, b, y, pos, wPos, wNeg, n, C, G, gb);
    napi_value undefined;
    CHECK_NAPI(napi_get_undefined(env, &undefined));
    return undefined;
  });
}

// contextTexts(ctxTok: Int32Array, ctxAct: Float32Array [slots * width], ctxLen: Int32Array [slots], width, slots: Int32Array [n])
//   -> { text: string, ends: Int32Array [2n], exotic: Uint8Array [n] } (text.h)
napi_value ContextTexts(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    auto a = args(env, info, 5);
    const int width = count(env, a[3], "width", 1, 1 << 20);
    TypedArray li = typedInfo(env, a[2], "ctxLen");
    TypedArray si = typedInfo(env, a[4], "slots");
    if (li.type != napi_int32_array || si.type != napi_int32_array) throw JsError{"ctxLen and slots must be Int32Arrays"};
    const size_t cap = li.length, n = si.length;
    const int32_t* ctxLen = static_cast<int32_t*>(li.data);
    const int32_t* slots = static_cast<int32_t*>(si.data);
    const int32_t* ctxTok = typed<int32_t>(env, a[0], napi_int32_array, cap * width, "ctxTok");
    const float* ctxAct = f32(env, a[1], cap * width, "ctxAct");
    for (size_t q = 0; q < n; q++)
      if (slots[q] < 0 || (size_t)slots[q] >= cap || ctxLen[slots[q]] < 0 || ctxLen[slots[q]] > width) throw JsError{"contextTexts: a slot or its length is out of range"};
    // Each value takes at most 22 characters (an int32 with its comma; an activation below 1e11 with sign and 4 decimals).
    if ((double)n * (2 * width * 22 + 4) > 2e9) throw JsError{"contextTexts: too many slots for one call"};
    std::string text;
    text.reserve(n * (size_t)width * 12);
    void *pe, *px;
    napi_value abe, abx, te, tx, str, out;
    CHECK_NAPI(napi_create_arraybuffer(env, sizeof(int32_t) * 2 * n, &pe, &abe));
    CHECK_NAPI(napi_create_arraybuffer(env, n, &px, &abx));
    sdl::contextTexts(ctxTok, ctxAct, ctxLen, width, slots, (int)n, text, static_cast<int32_t*>(pe), static_cast<uint8_t*>(px));
    CHECK_NAPI(napi_create_string_latin1(env, text.data(), text.size(), &str));
    CHECK_NAPI(napi_create_typedarray(env, napi_int32_array, 2 * n, abe, 0, &te));
    CHECK_NAPI(napi_create_typedarray(env, napi_uint8_array, n, abx, 0, &tx));
    CHECK_NAPI(napi_create_object(env, &out));
    CHECK_NAPI(napi_set_named_property(env, out, "text", str));
    CHECK_NAPI(napi_set_named_property(env, out, "ends", te));
    CHECK_NAPI(napi_set_named_property(env, out, "exotic", tx));
    return out;
  });
}

// ---- IndexStats

sdl::IndexStats* unwrapStats(napi_env env, napi_value self) {
  void* p;
  CHECK_NAPI(napi_unwrap(env, self, &p));
  return static_cast<sdl::IndexStats*>(p);
}

// new IndexStats({ m, vocab, topK, radius, cooccurrence: n, cooccurrenceMaxEntries?, cooccurrenceBlock?, edges: Float32Array, perBand,
//                  bandEdges: Float64Array })
napi_value StatsNew(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 1, &self);
    napi_value o = a[0];
    int m = count(env, get(env, o, "m"), "m", 1);
    TypedArray ev = typedInfo(env, get(env, o, "edges"), "edges");
    if (ev.type != napi_float32_array) throw JsError{"edges must be a Float32Array"};
    std::vector<float> edges(static_cast<float*>(ev.data), static_cast<float*>(ev.data) + ev.length);
    const int perBand = (int)numProp(env, o, "perBand", 0);
    std::vector<double> bandEdges;
    if (perBand > 0) {
      TypedArray be = typedInfo(env, get(env, o, "bandEdges"), "bandEdges");
      if (be.type != napi_float64_array) throw JsError{"bandEdges must be a Float64Array"};
      bandEdges.assign(static_cast<double*>(be.data), static_cast<double*>(be.data) + be.length);
    }
    auto* st = new sdl::IndexStats(m, (int)numProp(env, o, "vocab", 0), (int)num(env, get(env, o, "topK"), "topK"), (int)num(env, get(env, o, "radius"), "radius"),
                                   (int)numProp(env, o, "cooccurrence", 0), (size_t)numProp(env, o, "cooccurrenceMaxEntries", (double)(1u << 28)),
                                   (size_t)numProp(env, o, "cooccurrenceBlock", (double)(1u << 25)),
                                   std::move(edges), perBand, std::move(bandEdges), (int)numProp(env, o, "threads", 1));
    CHECK_NAPI(napi_wrap(env, self, st, [](napi_env, void* p, void*) { delete static_cast<sdl::IndexStats*>(p); }, nullptr, nullptr));
    return self;
  });
}

// add(start: Int32Array[n + 1], idx, val, token: Int32Array[n], window, doc, pos: Int32Array[n]): the chunk's statistics, and
// its examples kept in the accumulator's stores.
napi_value StatsAdd(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 7, &self);
    sdl::IndexStats* st = unwrapStats(env, self);
    TypedArray sa = typedInfo(env, a[0], "start");
    if (sa.type != napi_int32_array || sa.length < 1) throw JsError{"start must be an Int32Array of rows + 1 offsets"};
    const int n = (int)sa.length - 1;
    const int32_t* start = static_cast<int32_t*>(sa.data);
    const size_t nnz = (size_t)start[n];
    const int32_t* idx = typed<int32_t>(env, a[1], napi_int32_array, nnz, "idx");
    const float* val = f32(env, a[2], nnz, "val");
    const int32_t* token = typed<int32_t>(env, a[3], napi_int32_array, n, "token");
    const int32_t* window = typed<int32_t>(env, a[4], napi_int32_array, n, "window");
    const int32_t* doc = typed<int32_t>(env, a[5], napi_int32_array, n, "doc");
    const int32_t* pos = typed<int32_t>(env, a[6], napi_int32_array, n, "pos");
    for (size_t q = 0; q < nnz; q++)
      if (idx[q] < 0 || idx[q] >= st->m) throw JsError{"latent index out of range"};
    st->add(n, start, idx, val, token, window, doc, pos);
    return nullptr;
  });
}

// { store: { width, act, doc, window, pos, token, ctxStart, ctxLen, ctxTok, ctxAct }, off, slots, band? } (index/examples.ts
// ExampleLists), the store holding the examples in list order (slots 0, 1, ...). Copied into ordinary ArrayBuffers, which
// move to the index's writer threads.
napi_value exampleListOut(napi_env env, const sdl::ExampleList& l, bool withBand) {
  const sdl::ExampleSlots& s = l.slots;
  auto i32 = [&](const auto& v) { return copyOut(env, v.data(), v.size() * 4, napi_int32_array, v.size()); };
  auto f32s = [&](const auto& v) { return copyOut(env, v.data(), v.size() * 4, napi_float32_array, v.size()); };
  napi_value store, out, width;
  CHECK_NAPI(napi_create_object(env, &store));
  CHECK_NAPI(napi_create_int32(env, s.width, &width));
  CHECK_NAPI(napi_set_named_property(env, store, "width", width));
  CHECK_NAPI(napi_set_named_property(env, store, "act", f32s(s.act)));
  CHECK_NAPI(napi_set_named_property(env, store, "doc", i32(s.doc)));
  CHECK_NAPI(napi_set_named_property(env, store, "window", i32(s.window)));
  CHECK_NAPI(napi_set_named_property(env, store, "pos", i32(s.pos)));
  CHECK_NAPI(napi_set_named_property(env, store, "token", i32(s.token)));
  CHECK_NAPI(napi_set_named_property(env, store, "ctxStart", i32(s.ctxStart)));
  CHECK_NAPI(napi_set_named_property(env, store, "ctxLen", i32(s.ctxLen)));
  CHECK_NAPI(napi_set_named_property(env, store, "ctxTok", i32(s.ctxTok)));
  CHECK_NAPI(napi_set_named_property(env, store, "ctxAct", f32s(s.ctxAct)));
  CHECK_NAPI(napi_create_object(env, &out));
  CHECK_NAPI(napi_set_named_property(env, out, "store", store));
  CHECK_NAPI(napi_set_named_property(env, out, "off", i32(l.off)));
  std::vector<int32_t> slots(s.size());
  for (size_t q = 0; q < slots.size(); q++) slots[q] = (int32_t)q;
  CHECK_NAPI(napi_set_named_property(env, out, "slots", i32(slots)));
  if (withBand) CHECK_NAPI(napi_set_named_property(env, out, "band", copyOut(env, l.band.data(), l.band.size(), napi_uint8_array, l.band.size())));
  return out;
}

// Hands a vector's memory to JavaScript without copying (the ArrayBuffer's finalizer frees it).
template <class T, class A>
napi_value give(napi_env env, std::vector<T, A>& v, napi_typedarray_type t) {
  auto* holder = new std::vector<T, A>(std::move(v));
  napi_value ab, arr;
  void* p = holder->empty() ? nullptr : holder->data();
  if (!p) {
    delete holder;
    return copyOut(env, nullptr, 0, t, 0);
  }
  CHECK_NAPI(napi_create_external_arraybuffer(env, p, holder->size() * sizeof(T), [](napi_env, void*, void* h) { delete static_cast<std::vector<T, A>*>(h); }, holder, &ab));
  CHECK_NAPI(napi_create_typedarray(env, t, holder->size(), ab, 0, &arr));
  return arr;
}

// result() -> { count, sum: Float64Array[m], max: Float32Array[m], hist: Uint32Array, tok: Float32Array,
//   qSeen: Int32Array, examples, quantiles (exampleListOut) }
// (moves the accumulators out: call once, at the end)
napi_value StatsResult(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    args(env, info, 0, &self);
    sdl::IndexStats* st = unwrapStats(env, self);
    napi_value out;
    CHECK_NAPI(napi_create_object(env, &out));
    // The example lists first: the quantiles' read qSeen, which is moved out below.
    CHECK_NAPI(napi_set_named_property(env, out, "examples", exampleListOut(env, st->topExamples(), false)));
    CHECK_NAPI(napi_set_named_property(env, out, "quantiles", exampleListOut(env, st->quantileExamples(), true)));
    CHECK_NAPI(napi_set_named_property(env, out, "count", give(env, st->count, napi_float64_array)));
    CHECK_NAPI(napi_set_named_property(env, out, "sum", give(env, st->sum, napi_float64_array)));
    CHECK_NAPI(napi_set_named_property(env, out, "max", give(env, st->max, napi_float32_array)));
    CHECK_NAPI(napi_set_named_property(env, out, "hist", give(env, st->hist, napi_uint32_array)));
    CHECK_NAPI(napi_set_named_property(env, out, "tok", give(env, st->tok, napi_float32_array)));
    CHECK_NAPI(napi_set_named_property(env, out, "qSeen", give(env, st->qSeen, napi_int32_array)));
    return out;
  });
}

// cooccurrence() -> { n, other: Int32Array[m * n], count: Uint32Array[m * n], tokens }: each feature's n most
// co-occurring features over the rows kept (once; IndexStats::cooccurrence).
napi_value StatsCooccurrence(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    args(env, info, 0, &self);
    sdl::IndexStats* st = unwrapStats(env, self);
    const size_t len = (size_t)st->m * st->cooTop;
    std::vector<int32_t> other(len);
    std::vector<uint32_t> count(len);
    if (len) st->cooccurrence(other.data(), count.data());
    napi_value out, n, tokens;
    CHECK_NAPI(napi_create_object(env, &out));
    CHECK_NAPI(napi_create_int32(env, st->cooTop, &n));
    CHECK_NAPI(napi_create_double(env, (double)st->cooTokens(), &tokens));
    CHECK_NAPI(napi_set_named_property(env, out, "n", n));
    CHECK_NAPI(napi_set_named_property(env, out, "other", give(env, other, napi_int32_array)));
    CHECK_NAPI(napi_set_named_property(env, out, "count", give(env, count, napi_uint32_array)));
    CHECK_NAPI(napi_set_named_property(env, out, "tokens", tokens));
    return out;
  });
}

// instructionPeak(threads, seconds) -> { fp32, bf16 }: GFLOP/s of float32 FMA and of the bf16 dot product in
// registers, `threads` threads at once (0 where the processor lacks the instruction; native/src/peak.h).
napi_value InstructionPeak(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value a[2];
    size_t got = 2;
    CHECK_NAPI(napi_get_cb_info(env, info, &got, a, nullptr, nullptr));
    if (got < 2) throw JsError{"instructionPeak(threads, seconds)"};
    const double threads = num(env, a[0], "threads"), seconds = num(env, a[1], "seconds");
    if (!(threads >= 1 && threads <= 256) || threads != (int)threads) throw JsError{"instructionPeak: threads must be an integer from 1 to 256"};
    if (!(seconds > 0 && seconds <= 10)) throw JsError{"instructionPeak: seconds must be in (0, 10]"};
    const sdl::PeakRates r = sdl::instructionPeak((int)threads, seconds);
    napi_value out, v;
    CHECK_NAPI(napi_create_object(env, &out));
    CHECK_NAPI(napi_create_double(env, r.fp32, &v));
    CHECK_NAPI(napi_set_named_property(env, out, "fp32", v));
    CHECK_NAPI(napi_create_double(env, r.bf16, &v));
    CHECK_NAPI(napi_set_named_property(env, out, "bf16", v));
    return out;
  });
}

// cpuFeatures() -> { avx512, avx2, fma }: which of the other builds this processor can run.
napi_value CpuFeatures(napi_env env, napi_callback_info) {
  return guard(env, [&]() -> napi_value {
    napi_value out;
    CHECK_NAPI(napi_create_object(env, &out));
    bool avx512 = false, avx2 = false, fma = false;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl");
    avx2 = __builtin_cpu_supports("avx2");
    fma = __builtin_cpu_supports("fma");
#endif
    napi_value t;
    CHECK_NAPI(napi_get_boolean(env, avx512, &t));
    CHECK_NAPI(napi_set_named_property(env, out, "avx512", t));
    CHECK_NAPI(napi_get_boolean(env, avx2, &t));
    CHECK_NAPI(napi_set_named_property(env, out, "avx2", t));
    CHECK_NAPI(napi_get_boolean(env, fma, &t));
    CHECK_NAPI(napi_set_named_property(env, out, "fma", t));
    return out;
  });
}

// sdl fit --low-memory: glibc raises its mmap threshold to the size of each large block freed (up to 32 MB), after
// which freed read chunks, evaluation chunks and per-batch arrays are carved from the heap and kept there; and it gives
// every thread its own arena. A fixed threshold returns large blocks to the system when freed, and two arenas are
// enough for a main thread and a two-core pool: 768 x 24,576 fit's steady RSS ~50 MB lower at the same speed. The
// threshold is 16 KiB, not 128: the step's blocks between the two (per-thread lists and selections whose sizes follow
// the dead latents' count) left free chunks in the arenas that later steps could not reuse; at 16 KiB a 10M-token
// fit's peak is 2-4 MB lower, ~55 more mmap calls a step, the same speed (docs/BENCHMARKS.md). Not the default: the
// page faults of fresh mappings cost the index ~0.3 s in 7.
napi_value MallocLean(napi_env env, napi_callback_info) {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 16 * 1024);
  mallopt(M_ARENA_MAX, 2);
#endif
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}

// mallocKeep(): the opposite policy, for sdl harvest's forward workers. onnxruntime-node allocates every output
// tensor anew each batch (napi_create_arraybuffer, zero-filled), and a worker frees it (detach, below) as soon as it
// has copied it into the shard. With glibc's defaults the freed top of the worker's arena went back to the system and was faulted
// in and zeroed by the kernel again next batch: 0.6-0.8 s of kernel time per million tokens of the bundled model.
// Blocks up to 4 MiB now come from the arenas and an arena keeps up to 256 MiB free (a harvest's peak is its two shard
// buffers and a few batches); a loop that frees its outputs elsewhere is unchanged by it (docs/BENCHMARKS.md).
napi_value MallocKeep(napi_env env, napi_callback_info) {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}

// detach(arrayBuffer): detaches an ArrayBuffer, which frees its memory now (when nothing else shares it) rather than
// at its thread's next garbage collection. A harvest's forward worker detaches onnxruntime-node's output buffers once
// it has copied them into the shard: left to the worker's collector, ~20 batches' outputs (tens of MB) piled up
// between collections and each pile was new memory, 20-60k page faults a million tokens of the bundled model; freed
// at once, the next batch's outputs reuse the same blocks (docs/BENCHMARKS.md). Returns whether it detached.
napi_value Detach(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value buf = args(env, info, 1)[0];
    bool isBuffer = false;
    CHECK_NAPI(napi_is_arraybuffer(env, buf, &isBuffer));
    if (!isBuffer) throw JsError{"detach: an ArrayBuffer"};
    bool detached = false;
    CHECK_NAPI(napi_is_detached_arraybuffer(env, buf, &detached));
    // A buffer that cannot be detached (one a WebAssembly memory owns, say) is left to the collector.
    const bool now = !detached && napi_detach_arraybuffer(env, buf) == napi_ok;
    napi_value out;
    CHECK_NAPI(napi_get_boolean(env, now, &out));
    return out;
  });
}

// crc32c(bytes: Uint8Array, crc = 0) -> the CRC-32C of the bytes continuing from crc (checksum.h): shards' checksums.
napi_value Crc32c(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    auto a = args(env, info, 2, nullptr, 1);
    TypedArray t = typedInfo(env, a[0], "crc32c's bytes");
    if (t.type != napi_uint8_array) throw JsError{"crc32c's bytes must be a Uint8Array"};
    const double c = isUndefined(env, a[1]) ? 0 : num(env, a[1], "crc");
    if (!(c >= 0 && c <= 4294967295.0) || c != static_cast<double>(static_cast<uint32_t>(c))) throw JsError{"crc32c: crc must be an integer in [0, 2^32)"};
    const uint32_t crc = static_cast<uint32_t>(c);
    return mkNum(env, sdl::crc32c(crc, static_cast<const uint8_t*>(t.data), t.length));
  });
}

// f32ToF16(src: Float32Array, dst: Uint16Array) -> overflows, and f16ToF32(src: Uint16Array, dst: Float32Array):
// src.length values converted into dst's first src.length (half.h; src/util/f16.ts is the reference).
// f32ToF16 returns how many finite values were too large for a half (half.h).
template <class S, class D, class R>
napi_value convertHalf(napi_env env, napi_callback_info info, napi_typedarray_type srcType, napi_typedarray_type dstType, const char* name,
                       R (*convert)(const S*, D*, size_t)) {
  return guard(env, [&]() -> napi_value {
    auto a = args(env, info, 2);
    TypedArray s = typedInfo(env, a[0], name), d = typedInfo(env, a[1], name);
    if (s.type != srcType || d.type != dstType) throw JsError{std::string(name) + ": wrong array types"};
    if (d.length < s.length) throw JsError{std::string(name) + ": dst is shorter than src"};
    if constexpr (std::is_void_v<R>) {
      convert(static_cast<const S*>(s.data), static_cast<D*>(d.data), s.length);
      napi_value undefined;
      napi_get_undefined(env, &undefined);
      return undefined;
    } else {
      return mkNum(env, static_cast<double>(convert(static_cast<const S*>(s.data), static_cast<D*>(d.data), s.length)));
    }
  });
}
napi_value F32ToF16(napi_env env, napi_callback_info info) {
  return convertHalf<float, uint16_t, size_t>(env, info, napi_float32_array, napi_uint16_array, "f32ToF16(src: Float32Array, dst: Uint16Array)", sdl::f32ToF16);
}
napi_value F16ToF32(napi_env env, napi_callback_info info) {
  return convertHalf<uint16_t, float, void>(env, info, napi_uint16_array, napi_float32_array, "f16ToF32(src: Uint16Array, dst: Float32Array)", sdl::f16ToF32);
}

// countNonFinite(a: Float32Array) -> how many entries are NaN or infinite (finite.h).
napi_value CountNonFinite(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    TypedArray t = typedInfo(env, args(env, info, 1)[0], "countNonFinite's argument");
    if (t.type != napi_float32_array) throw JsError{"countNonFinite takes a Float32Array"};
    return mkNum(env, static_cast<double>(sdl::countNonFinite(static_cast<const float*>(t.data), t.length)));
  });
}

// copyCountNonFinite(src: Float32Array, dst: Float32Array) -> src copied into dst's first src.length, and how many
// of its entries are NaN or infinite (finite.h).
napi_value CopyCountNonFinite(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    auto a = args(env, info, 2);
    TypedArray s = typedInfo(env, a[0], "copyCountNonFinite's src"), d = typedInfo(env, a[1], "copyCountNonFinite's dst");
    if (s.type != napi_float32_array || d.type != napi_float32_array) throw JsError{"copyCountNonFinite takes two Float32Arrays"};
    if (d.length < s.length) throw JsError{"copyCountNonFinite: dst is shorter than src"};
    return mkNum(env, static_cast<double>(sdl::copyCountNonFinite(static_cast<const float*>(s.data), static_cast<float*>(d.data), s.length)));
  });
}

// alignedBuffer(bytes) -> ArrayBuffer whose memory starts on a 4096-byte boundary, freed with it. JavaScript cannot
// ask for an alignment, and O_DIRECT writes (src/util/fsx.ts) need the buffer's address aligned to the disk's block.
napi_value AlignedBuffer(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value a[1];
    size_t got = 1;
    CHECK_NAPI(napi_get_cb_info(env, info, &got, a, nullptr, nullptr));
    if (got < 1) throw JsError{"alignedBuffer(bytes)"};
    const double n = num(env, a[0], "bytes");
    if (!(n > 0) || n > 1e12 || n != static_cast<double>(static_cast<size_t>(n))) throw JsError{"alignedBuffer: bytes must be a positive integer"};
    const size_t bytes = (static_cast<size_t>(n) + 4095) & ~static_cast<size_t>(4095);
    void* p = std::aligned_alloc(4096, bytes);
    if (!p) throw JsError{"alignedBuffer: out of memory"};
    napi_value out;
    const napi_status st = napi_create_external_arraybuffer(
        env, p, static_cast<size_t>(n), [](napi_env, void* data, void*) { std::free(data); }, nullptr, &out);
    if (st != napi_ok) {
      std::free(p);
      throw JsError{"alignedBuffer: napi_create_external_arraybuffer failed"};
    }
    return out;
  });
}

// pageOffset(typedArray) -> the address of the array's first byte modulo 4096. An O_DIRECT write can take bytes from
// where they lie when their address and their place in the file agree modulo the block (src/util/fsx.ts).
napi_value PageOffset(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    TypedArray t = typedInfo(env, args(env, info, 1)[0], "pageOffset's argument");
    return mkNum(env, static_cast<double>(reinterpret_cast<uintptr_t>(t.data) & 4095));
  });
}

// copyBytes(dst, offset, src): src's bytes into dst from byte `offset` (both Uint8Arrays; memmove). V8 copies from a
// SharedArrayBuffer with relaxed atomics, a byte at a time where the two addresses disagree modulo the word: 16 ms per
// 50 MB against 3 (O_DIRECT's staging copy of a Parquet shard, src/util/fsx.ts). TypedArray.set is the reference.
napi_value CopyBytes(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    const std::vector<napi_value> a = args(env, info, 3);
    TypedArray dst = typedInfo(env, a[0], "copyBytes' dst");
    TypedArray src = typedInfo(env, a[2], "copyBytes' src");
    if (dst.type != napi_uint8_array || src.type != napi_uint8_array) throw JsError{"copyBytes: dst and src must be Uint8Arrays"};
    const double off = num(env, a[1], "offset");
    if (!(off >= 0) || off != static_cast<double>(static_cast<size_t>(off)) || static_cast<size_t>(off) + src.length > dst.length)
      throw JsError{"copyBytes: offset + src.length must fit in dst"};
    if (src.length) std::memmove(static_cast<char*>(dst.data) + static_cast<size_t>(off), src.data, src.length);
    return mkNum(env, static_cast<double>(src.length));
  });
}

// adviseHuge(typedArray): huge pages for a large JavaScript array the kernels read at random (util.h adviseHuge);
// returns the bytes advised.
napi_value AdviseHuge(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    TypedArray t = typedInfo(env, args(env, info, 1)[0], "adviseHuge's argument");
    const bool w4 = t.type == napi_float32_array || t.type == napi_int32_array || t.type == napi_uint32_array;
    if (!w4 && t.type != napi_float64_array) throw JsError{"adviseHuge: a Float32Array, Int32Array, Uint32Array or Float64Array"};
    const size_t width = w4 ? 4 : 8;
    napi_value out;
    CHECK_NAPI(napi_create_double(env, (double)sdl::adviseHuge(t.data, t.length * width), &out));
    return out;
  });
}

// ---- Bpe (llama2.c's tokenizer; the TypeScript reference is Llama2cTokenizer in src/models/tokenizer.ts)

// A JavaScript string as UTF-8 (a lone surrogate becomes U+FFFD: the caller passes well-formed text).
std::string utf8(napi_env env, napi_value v, const char* what) {
  napi_valuetype t;
  CHECK_NAPI(napi_typeof(env, v, &t));
  if (t != napi_string) throw JsError{std::string(what) + " must be a string"};
  size_t n = 0;
  CHECK_NAPI(napi_get_value_string_utf8(env, v, nullptr, 0, &n));
  std::string s(n, '\0');
  CHECK_NAPI(napi_get_value_string_utf8(env, v, s.data(), n + 1, &n));
  return s;
}

// new Bpe(vocab: string[], scores: Float32Array): a vocabulary of at least 259 pieces (3 specials, 256 bytes).
napi_value BpeNew(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 2, &self);
    bool isArray = false;
    CHECK_NAPI(napi_is_array(env, a[0], &isArray));
    if (!isArray) throw JsError{"Bpe: vocab must be an array of strings"};
    uint32_t n = 0;
    CHECK_NAPI(napi_get_array_length(env, a[0], &n));
    if (n < 259) throw JsError{"Bpe: a llama2.c vocabulary has at least 259 pieces (3 specials and 256 bytes)"};
    std::vector<std::string> vocab(n);
    for (uint32_t i = 0; i < n; i++) {
      napi_value e;
      CHECK_NAPI(napi_get_element(env, a[0], i, &e));
      vocab[i] = utf8(env, e, "a vocab piece");
    }
    const float* sc = f32(env, a[1], n, "scores");
    auto* b = new sdl::Bpe(std::move(vocab), std::vector<float>(sc, sc + n));
    CHECK_NAPI(napi_wrap(env, self, b, [](napi_env, void* p, void*) { delete static_cast<sdl::Bpe*>(p); }, nullptr, nullptr));
    return self;
  });
}

// encode(text: string, prefix: boolean): Int32Array of the ids, no BOS.
napi_value BpeEncode(napi_env env, napi_callback_info info) {
  return guard(env, [&]() -> napi_value {
    napi_value self;
    auto a = args(env, info, 2, &self);
    void* p;
    CHECK_NAPI(napi_unwrap(env, self, &p));
    // The text as UTF-8 in one pass, into a buffer kept between calls: a UTF-16 unit is at most three bytes.
    napi_valuetype t;
    CHECK_NAPI(napi_typeof(env, a[0], &t));
    if (t != napi_string) throw JsError{"text must be a string"};
    size_t units = 0;
    CHECK_NAPI(napi_get_value_string_utf16(env, a[0], nullptr, 0, &units));
    thread_local std::string buf;
    if (buf.size() < 3 * units + 1) buf.resize(3 * units + 1);
    size_t n = 0;
    CHECK_NAPI(napi_get_value_string_utf8(env, a[0], buf.data(), 3 * units + 1, &n));
    const std::string_view text(buf.data(), n);
    bool prefix = false;
    CHECK_NAPI(napi_get_value_bool(env, a[1], &prefix));
    thread_local std::vector<int32_t> ids;
    ids.clear();
    static_cast<sdl::Bpe*>(p)->encode(text, prefix, ids);
    void* data;
    napi_value ab, out;
    CHECK_NAPI(napi_create_arraybuffer(env, ids.size() * sizeof(int32_t), &data, &ab));
    if (!ids.empty()) std::memcpy(data, ids.data(), ids.size() * sizeof(int32_t));
    CHECK_NAPI(napi_create_typedarray(env, napi_int32_array, ids.size(), ab, 0, &out));
    return out;
  });
}

// ---- Init

struct Method {
  const char* name;
  napi_callback fn;
};

// exports[name] = a class made by `ctor` with these methods.
void defineClass(napi_env env, napi_value exports, const char* name, napi_callback ctor, std::initializer_list<Method> methods) {
  std::vector<napi_property_descriptor> d;
  for (const Method& m : methods) d.push_back({m.name, nullptr, m.fn, nullptr, nullptr, nullptr, napi_default, nullptr});
  napi_value cls;
  napi_define_class(env, name, NAPI_AUTO_LENGTH, ctor, nullptr, d.size(), d.data(), &cls);
  napi_set_named_property(env, exports, name, cls);
}

napi_value Init(napi_env env, napi_value exports) {
  defineClass(env, exports, "Engine", EngineNew,
              {{"step", EngineStep},
               {"applyRows", EngineApplyRows},
               {"forward", EngineForward},
               {"projectDecoderGrad", EngineProject},
               {"normalizeRows", EngineNormalize},
               {"sumSquares", SumSquaresOf<unwrap>},
               {"adam", AdamOf<unwrap>},
               {"adamUnitRows", EngineAdamUnitRows}});
  defineClass(env, exports, "Clt", CltNew,
              {{"step", CltStep},
               {"forward", CltForward},
               {"projectDecoderGrad", CltProject},
               {"normalizeDecoder", CltNormalize},
               {"sumSquares", SumSquaresOf<unwrapClt>},
               {"adam", AdamOf<unwrapClt>}});
  defineClass(env, exports, "IndexStats", StatsNew, {{"add", StatsAdd}, {"result", StatsResult}, {"cooccurrence", StatsCooccurrence}});
  defineClass(env, exports, "Bpe", BpeNew, {{"encode", BpeEncode}});
  // Functions.
  for (const Method& m : std::initializer_list<Method>{
           {"gemm", Gemm},
           {"gemmChunkBytes", GemmChunkBytes},
           {"screenCopyBytes", ScreenCopyBytes},
           {"screenChunkBytes", ScreenChunkBytes},
           {"nearestRows", NearestRows},
           {"rowsLargest", RowsLargest},
           {"probeGradient", ProbeGradient},
           {"contextTexts", ContextTexts},
           {"mallocLean", MallocLean},
           {"mallocKeep", MallocKeep},
           {"crc32c", Crc32c},
           {"f32ToF16", F32ToF16},
           {"f16ToF32", F16ToF32},
           {"countNonFinite", CountNonFinite},
           {"copyCountNonFinite", CopyCountNonFinite},
           {"alignedBuffer", AlignedBuffer},
           {"adviseHuge", AdviseHuge},
           {"detach", Detach},
           {"pageOffset", PageOffset},
           {"copyBytes", CopyBytes},
           {"cpuFeatures", CpuFeatures},
           {"instructionPeak", InstructionPeak},
       }) {
    napi_value fn;
    napi_create_function(env, m.name, NAPI_AUTO_LENGTH, m.fn, nullptr, &fn);
    napi_set_named_property(env, exports, m.name, fn);
  }
  napi_value isa;
  napi_create_string_utf8(env, SDL_ISA, NAPI_AUTO_LENGTH, &isa);
  napi_set_named_property(env, exports, "isa", isa);
  napi_value screen;
  napi_get_boolean(env, sdl::screenSupported(), &screen);
  napi_set_named_property(env, exports, "bf16Screen", screen);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
