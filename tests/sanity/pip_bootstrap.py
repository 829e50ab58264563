"""Stands in for pip's get-pip.py when ansible-test bootstraps pip into its sanity virtualenvs.

ansible-test downloads get-pip.py from a host outside the package registries; this machine
and CI reach only PyPI. This does the same job with the interpreter's own ensurepip, then
installs the requested pip version (and the listed packages) from PyPI.
"""

from __future__ import annotations

import subprocess
import sys

GET_PIP_ONLY_FLAGS = {"--no-setuptools", "--no-wheel"}

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_FLAGS]
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *args])
