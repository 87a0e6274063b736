// Python binding of the CUDA quant_pack / dequant kernels: every input is checked here, before
// anything is launched (device, dtype, rank, contiguity, sizes).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "quant_pack.h"

namespace fedcore {
namespace {

InputType input_type(const at::Tensor& t, const char* what) {
  switch (t.scalar_type()) {
    case at::kHalf: return InputType::kFloat16;
    case at::kBFloat16: return InputType::kBFloat16;
    case at::kFloat: return InputType::kFloat32;
    default: TORCH_CHECK(false, what, " must be float16, bfloat16 or float32, got ", t.scalar_type());
  }
}

bool code_is_fp8(const at::Tensor& codes) {
  TORCH_CHECK(codes.scalar_type() == at::kChar || codes.scalar_type() == at::kFloat8_e4m3fn,
              "codes must be int8 or float8_e4m3fn, got ", codes.scalar_type());
  return codes.scalar_type() == at::kFloat8_e4m3fn;
}

}  // namespace

// x: (rows, hidden) CUDA, unit stride along hidden. sigma: None or a 1-element fp32 CUDA tensor.
// Returns [codes (rows, hidden) int8 | float8_e4m3fn, scales (rows,) fp32].
std::vector<at::Tensor> pack(const at::Tensor& x, const c10::optional<at::Tensor>& sigma, int64_t seed,
                             int64_t offset, bool fp8, int64_t variant) {
  TORCH_CHECK(variant >= 0 && variant < kPackVariants, "variant must be in [0, ", kPackVariants, "), got ", variant);
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor");
  TORCH_CHECK(x.dim() == 2, "x must be 2-D (rows, hidden), got ", x.dim(), " dims");
  TORCH_CHECK(x.size(1) >= 1 && x.size(1) <= kCudaMaxHidden, "hidden must be in [1, ", kCudaMaxHidden, "], got ",
              x.size(1));
  TORCH_CHECK(x.stride(1) == 1, "x must have unit stride along hidden");
  TORCH_CHECK(x.size(0) < (int64_t{1} << 31), "too many rows for one launch: ", x.size(0));
  const InputType type = input_type(x, "x");
  if (sigma.has_value()) {
    TORCH_CHECK(sigma->is_cuda() && sigma->device() == x.device(), "sigma must be on x's device");
    TORCH_CHECK(sigma->scalar_type() == at::kFloat && sigma->numel() == 1, "sigma must be one float32");
  }
  const c10::cuda::CUDAGuard guard(x.device());
  auto codes = at::empty({x.size(0), x.size(1)}, x.options().dtype(fp8 ? at::kFloat8_e4m3fn : at::kChar));
  auto scales = at::empty({x.size(0)}, x.options().dtype(at::kFloat));
  if (x.size(0) == 0) return {codes, scales};
  QuantPackParams p{};
  p.x = x.data_ptr();
  p.x_row_stride = x.stride(0);
  p.codes = codes.data_ptr();
  p.scales = scales.data_ptr<float>();
  p.sigma = sigma.has_value() ? sigma->data_ptr<float>() : nullptr;
  p.rows = x.size(0);
  p.hidden = x.size(1);
  p.q = (x.size(1) + 3) / 4;
  p.seed = static_cast<uint64_t>(seed);
  p.offset = static_cast<uint64_t>(offset);
  p.fp8 = fp8;
  p.type = type;
  p.variant = static_cast<int>(variant);
  launch_quant_pack(p, at::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {codes, scales};
}

// codes (rows, hidden) int8 | float8_e4m3fn contiguous, scales (rows,) fp32, out (rows, hidden)
// fp16 / bf16 / fp32 contiguous: out = codes * scales[:, None].
void unpack(const at::Tensor& codes, const at::Tensor& scales, at::Tensor& out) {
  TORCH_CHECK(codes.is_cuda() && scales.is_cuda() && out.is_cuda(), "codes, scales and out must be CUDA tensors");
  TORCH_CHECK(codes.device() == scales.device() && codes.device() == out.device(), "tensors on different devices");
  TORCH_CHECK(codes.dim() == 2 && codes.is_contiguous(), "codes must be 2-D and contiguous");
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() && scales.dim() == 1 &&
                  scales.size(0) == codes.size(0),
              "scales must be contiguous float32 of shape (rows,)");
  TORCH_CHECK(out.sizes() == codes.sizes() && out.is_contiguous(), "out must be contiguous and shaped like codes");
  TORCH_CHECK(codes.size(0) < (int64_t{1} << 31), "too many rows for one launch: ", codes.size(0));
  const bool fp8 = code_is_fp8(codes);
  const InputType type = input_type(out, "out");
  const c10::cuda::CUDAGuard guard(codes.device());
  if (codes.numel() == 0) return;
  DequantParams p{};
  p.codes = codes.data_ptr();
  p.scales = scales.data_ptr<float>();
  p.out = out.data_ptr();
  p.rows = codes.size(0);
  p.hidden = codes.size(1);
  p.fp8 = fp8;
  p.type = type;
  launch_dequant(p, at::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace fedcore

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fedcore quant_pack / dequant (CUDA C++)";
  m.def("pack", &fedcore::pack, "noise + per-row quantized packing", py::arg("x"), py::arg("sigma"), py::arg("seed"),
        py::arg("offset"), py::arg("fp8"), py::arg("variant") = 0);
  m.def("unpack", &fedcore::unpack, "codes * scales into out", py::arg("codes"), py::arg("scales"), py::arg("out"));
  m.attr("max_hidden") = fedcore::kCudaMaxHidden;
  m.attr("pack_variants") = fedcore::kPackVariants;
}
