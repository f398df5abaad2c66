"""Benchmarks of the pack (`python -m bench`): linears, Wan block and encoders, attention, end to end in ComfyUI.

Not part of the node pack's run time: nothing under quant/ or nodes/ imports this package.
"""
