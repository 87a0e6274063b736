// CUDA C++ quant_pack / dequant: one thread block per row, 16-byte vector loads where the row
// layout allows (q a multiple of the vector width and 16-byte aligned rows), fp32 staging of the
// noisy row in shared memory, a block reduction for absmax, then a store pass of the codes.
#include "quant_pack.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cmath>

namespace fedcore {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ uint4 philox4x32_10(uint64_t counter, uint64_t seed) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi_b = __umulhi(0xCD9E8D57u, c2), lo_b = 0xCD9E8D57u * c2;
    const uint32_t hi_a = __umulhi(0xD2511F53u, c0), lo_a = 0xD2511F53u * c0;
    c0 = hi_b ^ c1 ^ k0;
    c2 = hi_a ^ c3 ^ k1;
    c1 = lo_b;
    c3 = lo_a;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return make_uint4(c0, c1, c2, c3);
}

__device__ __forceinline__ float uniform01(uint32_t bits) {
  return static_cast<float>(bits >> 8) * 5.960464477539063e-08f + 2.9802322387695312e-08f;
}

__device__ __forceinline__ void normals4(uint64_t seed, uint64_t counter, float n[4]) {
  const uint4 r = philox4x32_10(counter, seed);
  const float rad_a = sqrtf(-2.0f * __logf(uniform01(r.x)));
  const float rad_b = sqrtf(-2.0f * __logf(uniform01(r.z)));
  float sa, ca, sb, cb;
  __sincosf(6.283185307179586f * uniform01(r.y), &sa, &ca);
  __sincosf(6.283185307179586f * uniform01(r.w), &sb, &cb);
  n[0] = rad_a * ca;
  n[1] = rad_a * sa;
  n[2] = rad_b * cb;
  n[3] = rad_b * sb;
}

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_float<float>(float v) { return v; }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }

// Loads VEC consecutive elements at x[col..col+VEC) as fp32 (one 16-byte load when VEC > 1).
template <typename T, int VEC>
__device__ __forceinline__ void load_vec(const T* x, int64_t col, int64_t hidden, float v[VEC]) {
  if constexpr (VEC > 1) {
    const uint4 raw = *reinterpret_cast<const uint4*>(x + col);
    const T* elems = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = to_float(elems[j]);
  } else {
    v[0] = col < hidden ? to_float(x[col]) : 0.0f;
  }
}

__device__ __forceinline__ float block_reduce_max(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < blockDim.x / 32 ? shared[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// MIN_BLOCKS: resident blocks (rows) per SM the register budget must allow: 1 lets the compiler
// use ~80 registers (3 rows per SM fit), 4 caps it at 64 (more rows in flight, a few spills with
// noise). Both are built; the dispatcher times them.
template <typename T, int VEC, bool NOISE, bool FP8, int MIN_BLOCKS>
__global__ void __launch_bounds__(kThreads, MIN_BLOCKS) quant_pack_kernel(QuantPackParams p) {
  extern __shared__ __align__(16) float staged[];  // the noisy row, fp32, hidden entries
  __shared__ float reduce_max[32];
  __shared__ float reduce_bad[32];
  constexpr float qmax = FP8 ? 448.0f : 127.0f;
  const int64_t row = blockIdx.x, hidden = p.hidden, q = p.q;
  const T* x = static_cast<const T*>(p.x) + row * p.x_row_stride;
  const float sigma = NOISE ? *p.sigma : 0.0f;
  const uint64_t base = p.offset + static_cast<uint64_t>(row) * static_cast<uint64_t>(q);
  float amax = 0.0f, bad = 0.0f;
  for (int64_t i0 = static_cast<int64_t>(threadIdx.x) * VEC; i0 < q; i0 += static_cast<int64_t>(blockDim.x) * VEC) {
    float v[4][VEC];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t col = k * q + i0;
      if (VEC == 1 || col + VEC <= hidden) {
        load_vec<T, VEC>(x, col, hidden, v[k]);
      } else {  // the row's tail: element loads, nothing read past the row
#pragma unroll
        for (int j = 0; j < VEC; ++j) v[k][j] = col + j < hidden ? to_float(x[col + j]) : 0.0f;
      }
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      float n[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (NOISE) normals4(p.seed, base + static_cast<uint64_t>(i0 + j), n);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int64_t col = k * q + i0 + j;
        if (col < hidden) {
          const float y = NOISE ? v[k][j] + sigma * n[k] : v[k][j];
          const float mag = fabsf(y);
          if (mag < INFINITY) {
            amax = fmaxf(amax, mag);
          } else {
            bad = 1.0f;  // NaN or +-inf
          }
          v[k][j] = y;
        }
      }
    }
    // stage the noisy row: 16-byte shared stores where aligned (scalar stores hit 8-way bank conflicts)
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t col = k * q + i0;
      if (VEC % 4 == 0 && col + VEC <= hidden) {
#pragma unroll
        for (int w = 0; w < VEC; w += 4) {
          *reinterpret_cast<float4*>(&staged[col + w]) = make_float4(v[k][w], v[k][w + 1], v[k][w + 2], v[k][w + 3]);
        }
      } else {
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          if (col + j < hidden) staged[col + j] = v[k][j];
        }
      }
    }
  }
  amax = block_reduce_max(amax, reduce_max);
  bad = block_reduce_max(bad, reduce_bad);
  // rows with absmax below 1e-35 pack as zeros: qmax / absmax would overflow fp32 (as in Triton)
  const bool tiny = !(amax >= 1e-35f);
  const float inv = tiny ? 0.0f : __fdiv_rn(qmax, amax);
  // block_reduce_max's __syncthreads also published the staged row
  for (int64_t c0 = static_cast<int64_t>(threadIdx.x) * 4; c0 < hidden; c0 += static_cast<int64_t>(blockDim.x) * 4) {
    float vals[4];
    if (c0 + 4 <= hidden) {  // c0 is a multiple of 4: an aligned 16-byte shared load
      const float4 f = *reinterpret_cast<const float4*>(&staged[c0]);
      vals[0] = f.x;
      vals[1] = f.y;
      vals[2] = f.z;
      vals[3] = f.w;
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) vals[j] = c0 + j < hidden ? staged[c0 + j] : 0.0f;
    }
    uint32_t packed = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t col = c0 + j;
      uint8_t byte = 0;
      if (col < hidden && bad == 0.0f) {
        const float scaled = fminf(fmaxf(vals[j] * inv, -qmax), qmax);
        if (FP8) {
          byte = __nv_fp8_e4m3(scaled).__x;
        } else {
          byte = static_cast<uint8_t>(static_cast<int8_t>(rintf(scaled)));
        }
      }
      packed |= static_cast<uint32_t>(byte) << (8 * j);
    }
    uint8_t* out = static_cast<uint8_t*>(p.codes) + row * hidden;
    if (hidden % 4 == 0) {
      *reinterpret_cast<uint32_t*>(out + c0) = packed;  // 4-byte aligned: row * hidden is a multiple of 4
    } else {
      for (int j = 0; j < 4 && c0 + j < hidden; ++j) out[c0 + j] = static_cast<uint8_t>(packed >> (8 * j));
    }
  }
  if (threadIdx.x == 0) p.scales[row] = bad != 0.0f ? NAN : (tiny ? 0.0f : __fdiv_rn(amax, qmax));
}

template <typename T, bool FP8>
__global__ void __launch_bounds__(kThreads) dequant_kernel(DequantParams p) {
  const int64_t row = blockIdx.x, hidden = p.hidden;
  const float scale = p.scales[row];
  const uint8_t* codes = static_cast<const uint8_t*>(p.codes) + row * hidden;
  T* out = static_cast<T*>(p.out) + row * hidden;
  const bool aligned = hidden % 16 == 0;
  for (int64_t c0 = static_cast<int64_t>(threadIdx.x) * 16; c0 < hidden; c0 += static_cast<int64_t>(blockDim.x) * 16) {
    uint4 in_raw = make_uint4(0, 0, 0, 0);
    uint8_t* bytes = reinterpret_cast<uint8_t*>(&in_raw);
    if (aligned) {
      in_raw = *reinterpret_cast<const uint4*>(codes + c0);
    } else {
#pragma unroll
      for (int j = 0; j < 16; ++j) bytes[j] = c0 + j < hidden ? codes[c0 + j] : 0;
    }
    constexpr int kWords = 16 * sizeof(T) / 16;
    uint4 out_raw[kWords];
    T* elems = reinterpret_cast<T*>(out_raw);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      float v;
      if (FP8) {
        __nv_fp8_e4m3 f;
        f.__x = bytes[j];
        v = static_cast<float>(f);
      } else {
        v = static_cast<float>(static_cast<int8_t>(bytes[j]));
      }
      elems[j] = from_float<T>(v * scale);
    }
    if (aligned) {  // 16 outputs: two (fp16/bf16) or four (fp32) 16-byte stores
#pragma unroll
      for (int w = 0; w < kWords; ++w) reinterpret_cast<uint4*>(out + c0)[w] = out_raw[w];
    } else {
      for (int j = 0; j < 16 && c0 + j < hidden; ++j) out[c0 + j] = elems[j];
    }
  }
}

template <typename T, int VEC, int MIN_BLOCKS>
void launch_pack_occupancy(const QuantPackParams& p, cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(p.hidden) * sizeof(float);
  auto kernel = p.sigma ? (p.fp8 ? quant_pack_kernel<T, VEC, true, true, MIN_BLOCKS>
                                 : quant_pack_kernel<T, VEC, true, false, MIN_BLOCKS>)
                        : (p.fp8 ? quant_pack_kernel<T, VEC, false, true, MIN_BLOCKS>
                                 : quant_pack_kernel<T, VEC, false, false, MIN_BLOCKS>);
  if (smem > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  kernel<<<static_cast<unsigned>(p.rows), kThreads, smem, stream>>>(p);
}

template <typename T, int VEC>
void launch_pack_typed(const QuantPackParams& p, cudaStream_t stream) {
  if (p.variant == 1) {
    launch_pack_occupancy<T, VEC, 4>(p, stream);
  } else {
    launch_pack_occupancy<T, VEC, 1>(p, stream);
  }
}

template <typename T>
void launch_pack_vec(const QuantPackParams& p, cudaStream_t stream) {
  constexpr int vec = 16 / sizeof(T);
  const bool aligned = p.q % vec == 0 && p.x_row_stride % vec == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0;
  if (aligned) {
    launch_pack_typed<T, vec>(p, stream);
  } else {
    launch_pack_typed<T, 1>(p, stream);
  }
}

template <typename T>
void launch_dequant_typed(const DequantParams& p, cudaStream_t stream) {
  auto kernel = p.fp8 ? dequant_kernel<T, true> : dequant_kernel<T, false>;
  kernel<<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p);
}

}  // namespace

void launch_quant_pack(const QuantPackParams& p, cudaStream_t stream) {
  switch (p.type) {
    case InputType::kFloat16: launch_pack_vec<__half>(p, stream); break;
    case InputType::kBFloat16: launch_pack_vec<__nv_bfloat16>(p, stream); break;
    case InputType::kFloat32: launch_pack_vec<float>(p, stream); break;
  }
}

void launch_dequant(const DequantParams& p, cudaStream_t stream) {
  switch (p.type) {
    case InputType::kFloat16: launch_dequant_typed<__half>(p, stream); break;
    case InputType::kBFloat16: launch_dequant_typed<__nv_bfloat16>(p, stream); break;
    case InputType::kFloat32: launch_dequant_typed<float>(p, stream); break;
  }
}

}  // namespace fedcore
