"""plan/calibrate.py loaded as a module for the tests (it is a script in plan/, not part of the nibble package)."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_calibrate():
    spec = importlib.util.spec_from_file_location("calibrate", os.path.join(ROOT, "plan", "calibrate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
