"""pytest setup for nibble's Python tests.

The package under test is the `nibble` that Python imports: with CTest on the main tree (build/), the one pip
installed into .venv (NIBBLE_EXPECT_INSTALLED names that venv, and the run stops if another copy was found);
on other trees, the tree's python_package on PYTHONPATH. A plain `python -m pytest tests/python` finds the
installed package, else build/python_package as a fallback.
"""
import os
import sys

import pytest
import torch

torch.set_num_threads(2)

_BUILD_PACKAGE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "build", "python_package"))
if os.path.isdir(_BUILD_PACKAGE) and _BUILD_PACKAGE not in sys.path:
    sys.path.append(_BUILD_PACKAGE)  # after PYTHONPATH entries, so an explicit PYTHONPATH wins

_EXPECT_INSTALLED = os.environ.get("NIBBLE_EXPECT_INSTALLED")
if _EXPECT_INSTALLED:
    import importlib.util

    _spec = importlib.util.find_spec("nibble")
    _found = os.path.abspath(_spec.origin) if _spec and _spec.origin else "nothing"
    if not _found.startswith(os.path.join(os.path.abspath(_EXPECT_INSTALLED), "lib")):
        pytest.exit(f"NIBBLE_EXPECT_INSTALLED: the tests are to run against the nibble pip installed into "
                    f"{_EXPECT_INSTALLED} (scripts/install_package.sh), but `import nibble` finds {_found}; "
                    f"unset PYTHONPATH, or run them without NIBBLE_EXPECT_INSTALLED", returncode=3)


@pytest.fixture
def restore_nibble_threads():
    """Lets a test change nibble.set_num_threads and puts the previous count back afterwards."""
    import nibble

    before = nibble.get_num_threads()
    yield
    nibble.set_num_threads(before)
