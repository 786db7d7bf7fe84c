// rnncore: the one instruction-set choice for the whole engine.
//
// The build uses no -march flag, so the compiler may only assume x86-64 (SSE2) everywhere;
// code that uses AVX2/FMA or AVX-512 is compiled with function-level target attributes
// (RNNCORE_TARGET_AVX2 / RNNCORE_TARGET_AVX512 below) and is only called when active_isa()
// allows it. A feature counts as present when both the CPU reports it (CPUID) and the
// operating system saves the matching register state (XCR0), so a hypervisor that hides
// AVX-512 state is respected.
//
// active_isa() is decided once per process, on first use, and never changes: the best ISA
// the CPU supports, or the one named by the environment variable RNNCORE_ISA
// (generic | avx2 | avx512), clamped to what the CPU supports. Every kernel family (GEMM,
// activations, fused cells) asks it, so one variable runs the whole engine on one path;
// the tests use it to run every path the host supports.
#pragma once

namespace rnncore {

enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2 };

struct CpuFeatures {
  bool avx2_fma = false;  // AVX2 and FMA3, with YMM state enabled by the OS
  bool avx512f = false;   // AVX-512 Foundation, with opmask/ZMM state enabled by the OS
};

CpuFeatures detect_cpu_features();
Isa best_supported_isa();  // what the CPU (and this build) can run
Isa active_isa();          // what this process runs (see above)
const char* isa_name(Isa isa);

// Data cache sizes in bytes (L1d and L2 per core; L3 as reported, often the whole shared cache),
// read once per process: the environment variable
// RNNCORE_CACHE_SIZES ("L1D,L2,L3", each bytes or with a K/M suffix, e.g. "48K,1M,32M") when set
// and valid, else the operating system's report (sysconf), else CPUID (leaf 4 on Intel, 0x8000001D
// on AMD), else defaults of 32 KB / 512 KB / 8 MB. `source` says which ("env", "sysconf", "cpuid",
// "default"). The GEMM derives its cache blocks from these (gemm/kernels.cpp).
struct CacheSizes {
  long l1d = 0, l2 = 0, l3 = 0;
  const char* source = "default";
};
const CacheSizes& cache_sizes();
// Parse "L1D,L2,L3" as above into *out; false (and *out untouched) when malformed or not positive.
bool parse_cache_sizes(const char* text, CacheSizes* out);

}  // namespace rnncore

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RNNCORE_X86_SIMD 1
#define RNNCORE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define RNNCORE_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))
#else
#define RNNCORE_X86_SIMD 0
#endif
