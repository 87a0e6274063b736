// Parameters shared by the quant_pack / dequant CUDA kernels and their launchers.
// Layout of the noise stream (the same as kernels/quant_pack.py): row r uses Philox4x32-10
// counters offset + r * q + i (i < q = ceil(H / 4)) under the 64-bit key seed; the four normals of
// counter i go to columns i, q + i, 2q + i, 3q + i.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace fedcore {

// Rows longer than this are refused by the CUDA path (the row is staged in shared memory as fp32).
constexpr int64_t kCudaMaxHidden = 32768;

enum class InputType { kFloat16, kBFloat16, kFloat32 };

struct QuantPackParams {
  const void* x;          // (rows, hidden) fp16 / bf16 / fp32, unit stride along hidden
  int64_t x_row_stride;   // elements between rows of x
  void* codes;            // (rows, hidden) int8 or float8_e4m3fn, contiguous
  float* scales;          // (rows,) fp32
  const float* sigma;     // 1 fp32 on the device: absolute noise std; nullptr = no noise
  int64_t rows;
  int64_t hidden;
  int64_t q;              // Philox counters per row: ceil(hidden / 4)
  uint64_t seed;
  uint64_t offset;
  bool fp8;               // codes are float8_e4m3fn (qmax 448) instead of int8 (qmax 127)
  InputType type;
  int variant;            // 0: registers unconstrained; 1: capped for 4 resident rows per SM
};

// Pack variants the launcher knows (see quant_pack_kernel.cu).
constexpr int kPackVariants = 2;

struct DequantParams {
  const void* codes;      // (rows, hidden) int8 or float8_e4m3fn
  const float* scales;    // (rows,)
  void* out;              // (rows, hidden) fp16 / bf16 / fp32
  int64_t rows;
  int64_t hidden;
  bool fp8;
  InputType type;
};

void launch_quant_pack(const QuantPackParams& p, cudaStream_t stream);
void launch_dequant(const DequantParams& p, cudaStream_t stream);

}  // namespace fedcore
