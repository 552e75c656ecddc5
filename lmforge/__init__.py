"""lmforge: build a language model from raw text, end to end."""

__version__ = "0.1.0"
