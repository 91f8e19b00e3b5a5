"""Decoding over the item trie: constrained beam search (plain, diverse, D3, IGD), exact top-K and teacher-forced scoring."""
from .beam_search import beam_search, beam_thresholds
from .common import Hypothesis, Rescorer, left_pad
from .diverse import diverse_beam_search
from .catalog import catalog_log_probs, catalog_top_k, certified_count_above, certified_top_k
from .d3 import D3
from .ig import IGScaling
from .exact import CountResult, ExactResult, SequenceScores, count_above, exact_top_k, sequence_log_probs

__all__ = ["Hypothesis", "left_pad", "beam_search", "beam_thresholds", "diverse_beam_search", "D3", "IGScaling", "Rescorer", "ExactResult",
           "SequenceScores", "exact_top_k", "sequence_log_probs", "catalog_log_probs", "catalog_top_k",
           "certified_top_k", "CountResult", "count_above", "certified_count_above"]
