#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: istioctl_info
short_description: The version of istioctl on the control node
version_added: 0.1.0
description:
  - Runs C(istioctl version --remote=false --short) (no cluster is asked) and returns the version it reports, without the
    C(client version:) prefix of newer releases.
  - Fails naming the binary when istioctl cannot be run, and, with O(expected_version), when it reports another version.
author:
  - meshfed.istio developers (@meshfed)
requirements:
  - istioctl on the control node
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - meshfed.istio.attributes
  - meshfed.istio.attributes.info_module
options:
  istioctl:
    description: istioctl binary (a name on PATH or a path).
    type: str
    default: istioctl
  expected_version:
    description: The version istioctl must report; empty checks nothing.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Istioctl is the version the inventory expects
  meshfed.istio.istioctl_info:
    istioctl: /usr/local/bin/istioctl
    expected_version: 1.30.0
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
version:
  description: The version istioctl reports.
  returned: success
  type: str
  sample: 1.30.0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.meshfed.istio.plugins.module_utils import _istioctl


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(istioctl=dict(type="str", default="istioctl"), expected_version=dict(type="str", default="")),
        supports_check_mode=True,
    )
    binary, expected = module.params["istioctl"], module.params["expected_version"]
    try:
        version = _istioctl.version(binary)
    except _istioctl.IstioctlError as exc:
        module.fail_json(msg=f"istioctl ({binary}) does not run: {exc}")
    if expected and version != expected:
        module.fail_json(
            msg=f"istioctl ({binary}) reports version {version}, the inventory expects {expected}; install istioctl {expected} or change meshfed_istio_version",
            version=version,
        )
    module.exit_json(changed=False, version=version)


if __name__ == "__main__":
    main()
