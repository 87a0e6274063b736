"""Load a real causal-LM checkpoint, frozen, for split / federated fine-tuning.

``load_pretrained`` takes a ``save_pretrained`` folder, a hub id (fetched only when asked), or a
GGUF file (converted once into a cached folder by ``fedcore.model.gguf``) and returns the
``*ForCausalLM`` in eval mode with every parameter frozen; adapters are added on top afterwards.
Bad input fails before transformers is asked, with a one-line ``ValueError`` that says what to do.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from .gguf import converted_folder, gguf_path

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
# "name" or "org/name" (the hub's id syntax); anything else that does not exist is a missing path
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _causal_lm_classes() -> set[str]:
    """Class names transformers registers as causal LMs (``GPT2LMHeadModel``, ``LlamaForCausalLM``...)."""
    names: set[str] = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update([value] if isinstance(value, str) else value)
    return names


def _check_folder(folder: Path) -> None:
    """Raise ``ValueError`` unless ``folder`` holds config.json and model weights."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a save_pretrained folder; for a .gguf file pass gguf_file=")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json; pass a folder written by save_pretrained")
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        raise ValueError(f"{folder} has config.json but no model weights (*.safetensors / pytorch_model*.bin)")


def _check_causal_lm(config: PretrainedConfig, source: str) -> None:
    """Raise ``ValueError`` unless the checkpoint's architecture is a registered causal LM.

    The saved ``architectures`` decide (a saved ``BertModel`` is refused, though transformers
    would build ``BertLMHeadModel`` from its config); without them, the model type does.
    """
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures:
        ok = all(name in _causal_lm_classes() for name in architectures)
        what = f"architecture {architectures}"
    else:
        ok = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        what = f"model type {config.model_type!r}"
    if not ok:
        raise ValueError(f"{source} holds {what}, not a causal LM (*ForCausalLM / *LMHeadModel); pass a decoder LM")


def load_pretrained(
    source: str,
    *,
    gguf_file: str | None = None,
    dtype: str = "fp32",
    attn_implementation: str | None = None,
    local_files_only: bool = True,
) -> PreTrainedModel:
    """The causal LM at ``source``, in eval mode, every parameter frozen, in ``dtype``, on CPU.

    Args:
        source: a ``save_pretrained`` folder, or a hub id (fetched only with
            ``local_files_only=False``; with True only the local hub cache is read).
        gguf_file: a GGUF file name inside the folder ``source`` (or an absolute path). It is
            dequantized once into a cached folder (``fedcore.model.gguf.converted_folder``) and
            that folder is loaded; later calls reuse it.
        dtype: "fp32", "bf16" or "fp16".
        attn_implementation: passed to transformers when set ("eager", "sdpa", ...).
    Raises ``ValueError`` for a missing path, a folder without config.json or weights, a
    non-causal-LM architecture, or a hub id that is not available locally.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    if gguf_file is not None:
        source = str(converted_folder(gguf_path(source, gguf_file)))
    path = Path(source).expanduser()
    if path.exists():
        _check_folder(path)
        where: str | Path = path
    elif HUB_ID.match(source) and not source.startswith((".", "~")):
        where = source
    else:
        raise ValueError(f"{source} does not exist; pass a save_pretrained folder or a hub id")
    try:
        config = AutoConfig.from_pretrained(where, local_files_only=local_files_only)
    except OSError as err:
        if isinstance(where, Path):
            raise ValueError(f"cannot read {where / 'config.json'}: {err}") from err
        if local_files_only:
            raise ValueError(
                f"{source} is not a folder, and as a hub id it is not in the local cache (local_files_only=True); "
                "pass local_files_only=False to download it from the hub, or an existing save_pretrained folder"
            ) from err
        raise ValueError(f"cannot fetch {source} from the hub: {err}") from err
    _check_causal_lm(config, source)

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation is not None else {}
    model = AutoModelForCausalLM.from_pretrained(
        where, config=config, dtype=DTYPES[dtype], local_files_only=local_files_only, **kwargs
    )
    model.eval()
    model.requires_grad_(False)
    return model
