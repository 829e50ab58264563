from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.meshfed.istio.plugins.filter.istio_installed import istio_installed
from ansible_collections.meshfed.istio.plugins.module_utils import _istio

OPERATOR = {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator", "metadata": {"name": "control-plane"}, "spec": {"profile": "default"}}
RECORDED = {"control-plane": _istio.digest(OPERATOR, "1.31.0")}


@pytest.mark.parametrize(
    ("installs", "version", "expected"),
    [
        (RECORDED, "1.31.0", True),
        (RECORDED, "1.31.1", False),  # another istioctl: an upgrade installs again
        ({"control-plane": ""}, "1.31.0", False),
        ({}, "1.31.0", False),
        (None, "1.31.0", False),  # nothing read: the module decides
        (RECORDED, None, False),
        (RECORDED, "", False),
    ],
)
def test_only_this_operator_by_this_istioctl_counts_as_installed(installs, version, expected):
    assert istio_installed(OPERATOR, installs, version) is expected


def test_another_document_is_not_installed():
    changed = {**OPERATOR, "spec": {"profile": "default", "values": {"global": {"network": "network2"}}}}
    assert istio_installed(changed, RECORDED, "1.31.0") is False


@pytest.mark.parametrize(("operator", "installs"), [({"kind": "IstioOperator"}, RECORDED), ("text", RECORDED), (OPERATOR, ["control-plane"])])
def test_wrong_inputs_are_refused(operator, installs):
    with pytest.raises(AnsibleFilterError, match="istio_installed"):
        istio_installed(operator, installs, "1.31.0")
