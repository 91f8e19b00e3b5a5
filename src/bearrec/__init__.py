"""bearrec: beam-search-aware LLM recommendation."""
__version__ = "0.1.0"
