{
  "target_defaults": {
    "sources": ["src/addon.cc", "src/engine.cc", "src/step.cc", "src/clt.cc", "src/gemm.cc", "src/encode.cc", "src/screen.cc", "src/select.cc", "src/index_stats.cc", "src/text.cc", "src/peak.cc", "src/checksum.cc", "src/bpe.cc", "src/half.cc", "src/finite.cc"],
    "cflags_cc!": ["-fno-exceptions"],
    "cflags_cc": ["-std=gnu++17", "-O3", "-fexceptions", "-ffp-contract=fast", "-fno-math-errno", "-pthread"],
    "ldflags": ["-pthread"],
    "xcode_settings": {
      "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
      "CLANG_CXX_LANGUAGE_STANDARD": "gnu++17",
      "OTHER_CPLUSPLUSFLAGS": ["-O3", "-ffp-contract=fast", "-fno-math-errno"]
    }
  },
  "targets": [
    { "target_name": "sdlkit_generic" }
  ],
  "conditions": [
    ["target_arch=='x64' and OS!='win'", {
      "targets": [
        { "target_name": "sdlkit_avx2", "cflags_cc": ["-march=x86-64-v3"] },
        { "target_name": "sdlkit_avx512", "cflags_cc": ["-march=x86-64-v4"] }
      ]
    }]
  ]
}
