"""Per-clip audio and visual feature extraction."""
