"""fedcore.evaluation: score what a causal LM generates against reference answers.

``greedy_answers`` decodes batches of tokenized prompts greedily with the full Hugging Face model
(left-padded, stopping at any EOS id) and returns only the new tokens; ``rouge_l`` (mean ROUGE-L
F1) and ``exact_match`` (SQuAD-normalised) compare the decoded text with the references.
"""

from .generation import greedy_answers
from .text_metrics import exact_match, normalize_answer, rouge_l

__all__ = ["exact_match", "greedy_answers", "normalize_answer", "rouge_l"]
