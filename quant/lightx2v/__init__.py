"""LightX2V's side: its config JSON (config.py), its key names (keys.py), LLMC smoothing factors (smoothing.py)."""
