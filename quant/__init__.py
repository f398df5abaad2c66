"""Quantized-linear core of comfyui-quantized: formats, scheme names, kernels, checkpoints.

Plain torch (plus optional kernel libraries); never imports ComfyUI.
"""
