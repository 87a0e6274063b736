#!/usr/bin/env bash
# The GPU checks and benchmarks in one go, for a machine with torch/triton/transformers/peft but
# no fedcore install (the lent H100). From the repo root:  bash bench/gpu_suite.sh OUTDIR [SUITES...]
# SUITES: tests tests-quant quant_pack lora fisher overlap split bcd_runtime_1b fibecfed_gpu
#         split_modes_1b_2 split_modes_1b_4 split_modes_1b_8 (one client count each) split_link_1b
# (default: tests and the kernel benches). pyzmq wheels in .whl/ are used.
set -u
out=${1:?usage: gpu_suite.sh OUTDIR [SUITES...]}; shift
suites=${*:-tests quant_pack lora fisher overlap split}
mkdir -p "$out"
site=/tmp/fedcore-site
py=python3
wheels=$(ls .whl/*.whl 2>/dev/null)
$py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --no-build-isolation --target "$site" $wheels . \
  >"$out/install.log" 2>&1 || { tail -20 "$out/install.log"; exit 1; }
export PYTHONPATH=$site PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1
nvidia-smi -L
$py -c "import torch,triton,transformers,peft;print('torch',torch.__version__,'triton',triton.__version__,'transformers',transformers.__version__,'peft',peft.__version__)"
for s in $suites; do
  case $s in
    tests) timeout 240 $py -c "import logging,time;logging.basicConfig(level=logging.INFO);t=time.time()
from fedcore.kernels.quant_pack_cuda import cuda_extension;print('csrc build:',cuda_extension(),round(time.time()-t,1),'s')" 2>&1 | tail -30
           timeout 300 $py -m pytest -q -p no:cacheprovider tests/kernels tests/lora tests/fisher tests/codec \
             tests/model/test_loss.py tests/algorithms/split/test_device.py 2>&1 | tee "$out/pytest.log" | grep -E "passed|failed|FAILED|Error" | tail -30 ;;
    tests-quant) timeout 300 $py -m pytest -q -p no:cacheprovider tests/kernels/test_quant_pack.py tests/codec \
             2>&1 | tee "$out/pytest.log" | grep -E "passed|failed|FAILED|Error" | tail -30 ;;
    bcd_runtime_1b) timeout 580 $py bench/bench_bcd_runtime.py --shape llama-3.2-1b --rounds 4 \
             --out "$out/bcd_runtime-h100.json" 2>&1 | tail -30 ;;
    split_modes_1b_*) c=${s##*_}; timeout 580 $py bench/bench_split_modes.py --shape llama-3.2-1b --device cuda \
             --clients "$c" --repeats 3 --out "$out/split_modes-1b-${c}clients-h100.json" 2>&1 | tail -20 ;;
    split_link_1b) timeout 580 $py bench/bench_split_link.py --shape llama-3.2-1b --device cuda --repeats 2 \
             --out "$out/split_link-h100.json" 2>&1 | tail -20 ;;
    fibecfed_gpu) timeout 580 $py bench/bench_fibecfed.py --device cuda --out "$out/fibecfed-h100.json" 2>&1 | tail -30 ;;
    *) timeout 240 $py bench/bench_$s.py --out "$out/$s-h100.json" 2>&1 | tail -45 ;;
  esac
done
