"""fedcore.model: partition Hugging Face decoder-only causal LMs into blocks and head/body/tail.

``split_model(model, blocks_a, blocks_c)`` returns head, body and tail ``nn.Module``s that call the
model's own layers; ``SplitState`` is what crosses between them (``to_wire`` / ``from_wire``).
"""

from .family import DecoderLayout, find_layout
from .generate import GenerationTrace, generate_through, generation_positions, split_generate
from .loss import causal_lm_loss, chunked_lm_loss
from .parts import SplitBody, SplitHead, SplitModel, SplitTail, blocks, group_blocks, split_model
from .state import SplitState

__all__ = [
    "DecoderLayout",
    "GenerationTrace",
    "SplitBody",
    "SplitHead",
    "SplitModel",
    "SplitState",
    "SplitTail",
    "blocks",
    "causal_lm_loss",
    "chunked_lm_loss",
    "find_layout",
    "generate_through",
    "generation_positions",
    "group_blocks",
    "split_generate",
    "split_model",
]
