"""Parameters and FLOPs of every registered student (timm's lightweight ones and kdsweep's own) as kdsweep
builds it for small inputs, measured by kdsweep's own cost code (kdsweep/models/cost.py).

FLOPs are torch.utils.flop_counter's for one image (a multiply-add counts 2); the ratios are to
resnet8x4 (a CIFAR student of the distillation benchmarks). On inputs of 64 pixels or less timm's
models get a stride-1 stem (kdsweep/models/timm_models.py), which is what a sweep trains; the last
column is the same network with timm's own stride-2 stem, on the same input.

    PYTHONPATH=. python benchmarks/timm_students.py                              # 3x32x32, 10 classes
    PYTHONPATH=. python benchmarks/timm_students.py --channels 1 --image-size 8   # digits
"""

from __future__ import annotations

import argparse

from kdsweep.models import count_flops, count_params, create_model, list_models
from kdsweep.models.registry import SMALL_IMAGE
from kdsweep.models.timm_models import PREFIX

REFERENCE = "resnet8x4"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    shape = (args.channels, args.image_size, args.image_size)
    rows = {}
    for name in list_models("student"):
        model = create_model(name, args.classes, args.channels, args.image_size)
        timm_stem = None
        if name.startswith(PREFIX):  # built as for a large image: timm's stem, unchanged
            timm_stem = count_flops(create_model(name, args.classes, args.channels, SMALL_IMAGE + 1), shape)
        rows[name] = count_params(model), count_flops(model, shape), timm_stem
    params_ref, flops_ref, _ = rows[REFERENCE]
    print(f"students on {args.channels}x{args.image_size}x{args.image_size} inputs, {args.classes} classes")
    print(f"| student | params (M) | MFLOPs | params / {REFERENCE} | FLOPs / {REFERENCE} | MFLOPs, timm's stem |")
    print("|---|---|---|---|---|---|")
    for name, (params, flops, timm_stem) in sorted(rows.items(), key=lambda item: item[1][1]):
        stem = f"{timm_stem / 1e6:.1f}" if timm_stem is not None else ""
        print(
            f"| {name} | {params / 1e6:.2f} | {flops / 1e6:.1f} | {params / params_ref:.2f} | "
            f"{flops / flops_ref:.2f} | {stem} |"
        )


if __name__ == "__main__":
    main()
