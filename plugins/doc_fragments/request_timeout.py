# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documents plugins/module_utils/_k8s.py REQUEST_TIMEOUT_SPEC; keep the two in step.

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  request_timeout:
    description:
      - Seconds to wait for the API server to connect and to answer one request.
      - An API server that does not answer in time is reported as unreachable, naming the cluster.
    type: int
    default: 10
"""
