"""fedcore.model: partition Hugging Face decoder-only causal LMs into blocks and head/body/tail.

``split_model(model, blocks_a, blocks_c)`` returns head, body and tail ``nn.Module``s that call the
model's own layers; ``SplitState`` is what crosses between them (``to_wire`` / ``from_wire``).
``load_pretrained`` loads a checkpoint folder (errors checked before loading); ``converted_folder``
dequantizes a GGUF once into a cached safetensors folder.
"""

from .family import DecoderLayout, find_layout
from .generate import GenerationTrace, generate_through, generation_positions, split_generate
from .gguf import convert_gguf, converted_folder, gguf_path, smollm2_gguf
from .loss import causal_lm_loss, chunked_lm_loss
from .parts import SplitBody, SplitHead, SplitModel, SplitTail, blocks, group_blocks, split_model
from .pretrained import DTYPES, load_pretrained
from .state import SplitState

__all__ = [
    "DTYPES",
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
    "convert_gguf",
    "converted_folder",
    "find_layout",
    "generate_through",
    "generation_positions",
    "gguf_path",
    "group_blocks",
    "load_pretrained",
    "smollm2_gguf",
    "split_generate",
    "split_model",
]
