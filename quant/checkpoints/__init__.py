"""Every on-disk layout in both directions: read/detect (read.py), write (layouts.py), the safetensors
byte layer (safetensors_file.py) and the converter CLI (convert.py)."""
