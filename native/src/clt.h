// Cross-layer transcoders (and skip transcoders, a CLT of one layer) on the CPU, with hand-written gradients. The
// seed paper's unified problem with many targets, written per layer l = 0..L-1:
//   f_l = sigma(x_l W_enc^l + b_enc^l)                    (each layer's features read only its own input)
//   y^_t = b_dec^t + x_t W_skip^t + sum_{l <= t} f_l W_dec^{l->t}   (the causal mask: features write forward only)
//   L = (1/B) sum_b sum_t ||y^_t - y_t||^2 + sparsity + AuxK
// As one dictionary, W_enc is block-diagonal and W_dec block upper-triangular; neither is ever stored dense here.
// Latent j = l n + i owns row j of W_encT [L n, dI] and one decoder row of (L - l) dO values: its writes to layers
// l..L-1 side by side, so a feature's whole output is one contiguous axpy into the suffix of the concatenated
// target. The TopK family selects per layer (k per layer), so features at layer l never depend on later layers
// and the replacement model runs in one causal pass. After the encoder GEMMs all work follows active entries.
#pragma once
#include <cstdint>
#include <vector>

#include "engine.h"
#include "pool.h"

namespace sdl {

struct CltConfig {
  int L = 1;          // layers
  int dI = 0, dO = 0;  // input and output width per layer
  int n = 0;          // latents per layer
  Activation act = TOPK;
  int k = 0;  // TopK/BatchTopK: per layer
  bool skip = false;
  int screen = 1;  // TopK: screen each layer's encoder in bf16, as Config::screen
};

// W_encT [L n][dI]; b_enc [L n]; W_dec: layer blocks back to back, block l = n rows of (L - l) dO; b_dec [L dO];
// log_threshold [L n] (JumpReLU); W_skip [L][dI][dO].
struct CltTensors {
  float* W_encT = nullptr;
  float* b_enc = nullptr;
  float* W_dec = nullptr;
  float* b_dec = nullptr;
  float* log_threshold = nullptr;
  float* W_skip = nullptr;
};

struct CltStepOptions {
  float sparsity = 0, bandwidth = 1;
  float auxkCoefficient = 0;
  int auxkK = 0;                  // dead latents per layer that reconstruct the residual
  const uint8_t* dead = nullptr;  // [L n]
  float denseAbove = kDenseAbove;  // engine.h
  bool storedFallback = false;    // BatchTopK: as StepOptions::storedFallback (engine.h), per layer
};

class Clt {
 public:
  Clt(const CltConfig& cfg, int threads);
  const CltConfig& config() const { return c_; }
  Pool& pool() { return pool_; }
  int latents() const { return c_.L * c_.n; }
  int rowLen(int l) const { return (c_.L - l) * c_.dO; }
  long decOffset(int l) const { return dec_[l]; }
  long decSize() const { return dec_[c_.L]; }
  long decRow(int j) const { return dec_[j / c_.n] + (long)(j % c_.n) * rowLen(j / c_.n); }

  // Loss and gradients (into g); fired[L n] counts the tokens each latent fired on. minSelected() then holds the
  // BatchTopK per-layer k-th values (-1 where nothing was selected).
  StepResult step(const CltTensors& p, const CltTensors& g, const float* X, const float* Y, int B, const CltStepOptions& o, float* fired);
  const std::vector<float>& minSelected() const { return kth_; }

  // Inference: TopK per layer, or pre > theta[j] (BatchTopK's per-layer threshold, JumpReLU's own) and > 0.
  void forward(const CltTensors& p, const float* X, int n, const float* theta, Sparse& out, float* yhat);
  Sparse passOut;  // as Engine::passOut

  void projectDecoderGrad(const float* W, float* g);
  void normalizeDecoder(float* W);

 private:
  void preacts(const CltTensors& p, const float* X, int B, float* pre);
  // TopK: each layer's top k selected inside its encoder GEMM (encode.cc), never storing [B, L n] pre-activations.
  // Rows [r0, r0 + B) of out (row at row L k, layer by layer, global latent indices; out sized by the caller). With
  // `dead`, layerAux_[l] gets each row's top k_aux dead pre-activations of layer l, global indices.
  // Returns whether every layer was screened in bf16 (screen.h).
  bool encodeTopKLayers(const CltTensors& p, const float* X, int B, const uint8_t* dead, int auxkK, Sparse& out, long r0);
  void addSkip(const CltTensors& p, const float* X, int B, float* Yh);
  StepResult& denseStep(const CltTensors& p, const CltTensors& g, const float* X, const float* Y, int B, const CltStepOptions& o, float* fired, float* pre,
                        const std::vector<float>& norms, const std::vector<float>& theta, StepResult& r);
  StepResult& finish(const CltTensors& g, const float* X, int B, const float* fired, double sse, double spl, StepResult& r);
  CltConfig c_;
  Pool pool_;
  std::vector<long> dec_;
  LargeVector<float> pre_, G_, E_, skip_, scratch_, tmp_, acts_, dacts_;  // huge pages (engine.h's reason)
  std::vector<float> kth_;
  Sparse sp_, rowTop_;
  std::vector<Sparse> layerSp_, layerAux_;
  // BatchTopK: each layer's floor under its next threshold, from its last steps' (engine.h; the next step's fused
  // encoders keep the entries above it as candidates, as the SAE step does, step.cc).
  std::vector<BatchFloor> floor_;
};

}  // namespace sdl
