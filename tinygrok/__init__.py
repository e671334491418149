"""tinygrok: a hand-written transformer for studying grokking on modular arithmetic."""

__version__ = "0.1.0"
