"""distill: turn a slow or large teacher into a fast or small student."""

__version__ = "0.1.0"
