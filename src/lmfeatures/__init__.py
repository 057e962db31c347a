"""lmfeatures: find and check features of language models, reproducibly."""

__version__ = "0.1.0"
