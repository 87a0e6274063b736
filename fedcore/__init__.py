"""fedcore: a low-level toolkit for federated fine-tuning of LLMs.

Subpackages: ``fedcore.model`` (split a Hugging Face causal LM), ``fedcore.data`` (tasks, tokenizer,
partitioners), ``fedcore.kernels`` (Triton kernels, source in ``kernels/``), ``fedcore.transport``
(ZeroMQ transport, source in ``transport/``), ``fedcore.runtime`` and ``fedcore.cli`` (the main job).
"""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# kernels/ and transport/ live beside fedcore/ in the source tree. An installed wheel (or an
# editable install) maps them onto fedcore.kernels / fedcore.transport through setuptools
# package-dir; a bare checkout on PYTHONPATH (the GPU machine) resolves them through __path__.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "kernels", "__init__.py")) and _root not in __path__:
    __path__.append(_root)
