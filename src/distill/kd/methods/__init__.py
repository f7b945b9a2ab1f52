"""Classifier knowledge-distillation methods, one file per family."""

from distill.kd.methods import (  # noqa: F401
    dual_head,
    ensemble,
    exits,
    features,
    logits,
    ofa,
    online,
    self_distill,
    subclass,
)
