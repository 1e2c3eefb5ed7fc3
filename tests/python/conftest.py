"""pytest setup for nibble's Python tests.

The package under test is `nibble` from the build tree (build/python_package); CTest passes it on PYTHONPATH,
and a plain `python -m pytest tests/python` from the repository root finds it here as a fallback.
"""
import os
import sys

import pytest
import torch

torch.set_num_threads(2)

_BUILD_PACKAGE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "build", "python_package"))
if os.path.isdir(_BUILD_PACKAGE) and _BUILD_PACKAGE not in sys.path:
    sys.path.append(_BUILD_PACKAGE)  # after PYTHONPATH entries, so an explicit PYTHONPATH wins


@pytest.fixture
def restore_nibble_threads():
    """Lets a test change nibble.set_num_threads and puts the previous count back afterwards."""
    import nibble

    before = nibble.get_num_threads()
    yield
    nibble.set_num_threads(before)
