"""sweeper: how few trainable parameters does fine-tuning really need?"""

__version__ = "0.1.0"
