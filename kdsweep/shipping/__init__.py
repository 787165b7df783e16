"""Shipping a student: ONNX or TorchScript export, checked against PyTorch, timed, optionally int8.

One job per module: `spec` (the flags, validated), `source` (model URI -> run, data, model),
`onnx_export` and `torchscript_export`, `runtime` (an exported file on one CPU thread), `parity`,
`latency`, `quantize`, `record` (MLflow), and `ship`, which runs them in order.
"""

from kdsweep.shipping.errors import NotExportable
from kdsweep.shipping.ship import Shipped, ship_model
from kdsweep.shipping.spec import FORMATS, QUANTIZATIONS, ShipSpec

__all__ = ["FORMATS", "QUANTIZATIONS", "NotExportable", "ShipSpec", "Shipped", "ship_model"]
