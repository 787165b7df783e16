"""kdsweep: find the best small student classifier by knowledge distillation, on Ray Tune and MLflow."""

__version__ = "0.1.0"
