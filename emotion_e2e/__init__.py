"""emotion_e2e: end-to-end multimodal emotion recognition (arousal and valence every 40 ms)."""

__version__ = "0.1.0"
