"""The embedded demo: its corpus writer (corpus.py) and the offline TTS that speaks it (tts.py). Only the
CLI and the tests import it (pyproject.toml import contracts)."""
