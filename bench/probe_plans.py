"""Which linears of the whole-encoder benches run from launch plans (kernels.triton_plan), and why not.

    python bench/probe_plans.py [--layers 2]

Builds the T5-XXL and CLIP ViT-H encoders of quant.bench_encoders (few layers), swaps every linear for
each Triton mm_type, runs the forward a few times, and prints each planned key's state (a plan, False =
cannot be planned, absent) plus, for one more forward, every record() call's launch log.
"""
import argparse
import sys

import torch

sys.path.insert(0, ".")
from quant.bench_encoders import ENCODERS  # noqa: E402
from quant.bench_models import per_method  # noqa: E402
from quant.kernels import triton_plan  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args()
    dev = torch.device("cuda")
    seen = []
    orig = triton_plan.record

    def traced(key, log, *a):
        seen.append((key[0], key[2], key[3], [None if e is None else tuple(type(v).__name__ for v in e.args) for e in log]))
        return orig(key, log, *a)

    triton_plan.record = traced
    for name, (cls, tokens) in ENCODERS.items():
        model = cls(layers=args.layers, device=dev)
        inputs = model.inputs(tokens, dev)

        def measure():
            triton_plan._PLANS.clear()
            for _ in range(4):
                model(*inputs)
            seen.clear()
            model(*inputs)
            torch.cuda.synchronize()
            return dict(plans=[(k[0], k[2], k[3], type(v).__name__) for k, v in triton_plan._PLANS.items()],
                        generic=list(seen))

        for row in per_method(model, ["int8-triton", "fp8-triton", "fp8-b128-triton"], dev, measure)[1:]:
            print(f"\n{name} {row['method']}: plans {row['plans']}")
            print(f"  generic calls in the 5th forward: {len(row['generic'])}; first few: {row['generic'][:4]}")
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
