"""Registry of number formats: name -> QuantFormat (reference quantize/dequantize in plain torch)."""
from . import fp8, fp8_block128, int8, mxfp8, nvfp4
from .base import QuantFormat, QTensor, check_finite

FORMATS: dict[str, QuantFormat] = {
    m.FORMAT.name: m.FORMAT for m in (int8, fp8, fp8_block128, mxfp8, nvfp4)
}


def get_format(name: str) -> QuantFormat:
    """Look a format up by name; unknown names list the valid ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; valid: {', '.join(FORMATS)}") from None


__all__ = ["FORMATS", "QuantFormat", "QTensor", "check_finite", "get_format"]
