# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    """Attributes the modules of this collection share, beside ansible.builtin.action_common_attributes."""

    # Every module: it runs on the control node (the hosts of this collection are clusters, ansible_connection: local).
    DOCUMENTATION = r"""
options: {}
attributes:
  platform:
    platforms: posix
"""

    # A module that only reads.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: Reads only.
  diff_mode:
    support: none
"""
