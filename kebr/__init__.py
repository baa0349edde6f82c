"""kebr: the reproducible pipeline for KEBR multimodal sentiment analysis (ACM MM 2024)."""

__version__ = "0.1.0"
