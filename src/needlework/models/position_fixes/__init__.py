"""Inference-time position fixes: options of the ``hf`` backend (``position_fix:``), not backends.

Run:  needlework eval --model hf:smollm2-135m-instruct --benchmark mdqa --limit 5 \\
          model.position_fix.name=ms_poe

* ``attn_calibration`` (calibration.py): Hsieh et al., Findings of ACL 2024, arXiv:2406.16008;
* ``channel_scale`` (channel_scale.py): Yu et al., Findings of ACL 2025, arXiv:2406.02536;
* ``ms_poe`` (ms_poe.py): Zhang et al., NeurIPS 2024, arXiv:2403.04797.

Each is a frozen config (its settings) whose ``start(model, tokenizer)`` attaches it to a loaded
model (after a LoRA adapter is merged) through public transformers APIs: an attention function
registered in ``AttentionInterface`` that hands the calls it leaves alone to the model's own
kernel, forward hooks, and the model's own rotary function. The runtime's ``prompt(ids, text)``
wraps each generation and ``record()`` gives run.json what was derived (searched channel, head
order, biases). With a fix the backend generates one prompt at a time (``generate``, no padding,
a growing cache: key j sits at position j), which every fix relies on; at strength zero each
gives the plain model's outputs byte for byte (tested on the tiny and the real model).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from needlework.models.position_fixes.calibration import AttnCalibration
from needlework.models.position_fixes.channel_scale import ChannelScale
from needlework.models.position_fixes.ms_poe import MsPoE


def _named(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value  # a bare name: its defaults


PositionFix = Annotated[
    AttnCalibration | ChannelScale | MsPoE, Field(discriminator="name"), BeforeValidator(_named)
]
"""One of the fixes, chosen by its ``name`` (``{name: ms_poe, ...}`` or just ``ms_poe``)."""

__all__ = ["AttnCalibration", "ChannelScale", "MsPoE", "PositionFix"]
