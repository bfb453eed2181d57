"""The benchmark's own tests: its measuring parts against real processes and data.

The benchmark (``bench/``) is not an installed package: the repository's root goes on
the import path here.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
