# Makes `ansible_collections.meshfed.istio` importable when pytest runs from a checkout.
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if os.path.basename(os.path.dirname(os.path.dirname(_root))) == "ansible_collections":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(_root))))
else:
    _tree = tempfile.mkdtemp(prefix="meshfed-collections-")
    atexit.register(shutil.rmtree, _tree, True)
    os.makedirs(os.path.join(_tree, "ansible_collections", "meshfed"))
    os.symlink(_root, os.path.join(_tree, "ansible_collections", "meshfed", "istio"))
    sys.path.insert(0, _tree)
