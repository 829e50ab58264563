# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filters of module_utils/_render: what the roles write, from a cluster of the mesh plan and the settings.

Documented in istio_operator.yml, eastwest_operator.yml, eastwest_objects.yml and istio_namespace.yml.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.meshfed.istio.plugins.module_utils import _istio, _render

RENDERERS = {
    "istio_operator": _render.control_plane,
    "eastwest_operator": _render.eastwest_operator,
    "eastwest_objects": _render.eastwest_objects,
    "istio_namespace": _render.istio_namespace,
}


def _filter(name: str, render):
    def rendered(cluster, settings, **options):
        try:
            return render(cluster, settings, **options)
        except (TypeError, _render.RenderError, _istio.OverlayError) as exc:
            raise AnsibleFilterError(f"{name}: {exc}") from exc

    rendered.__name__ = name
    return rendered


class FilterModule:
    def filters(self):
        return {name: _filter(name, render) for name, render in RENDERERS.items()}
