"""vecflow: reproducible pipeline for next-vector, summarizer and ELM models."""
__version__ = "0.1.0"
