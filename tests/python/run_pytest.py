"""Runs pytest on the given arguments; exits 77 (CTest: skipped) when pytest or NumPy is missing."""

import sys

try:
    import numpy  # noqa: F401
    import pytest
except ImportError as e:
    print(f"skipped: {e} (python3 -m pip install -r scripts/test-requirements.txt)")
    sys.exit(77)

sys.exit(pytest.main(sys.argv[1:]))
