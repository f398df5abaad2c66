"""The converter from any folder: python3 <pack>/scripts/convert.py SRC DST --mm-type NAME [...] (--help for all).

Same as `python3 -m quant.checkpoints.convert` run from the pack's folder: puts the pack's folder on the
import path, then runs quant.checkpoints.convert.main.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from quant.checkpoints.convert import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
