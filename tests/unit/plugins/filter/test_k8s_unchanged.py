"""The k8s_unchanged filter: what the roles put in `when`, and its refusals of input it cannot judge."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.meshfed.istio.plugins.filter.k8s_unchanged import FilterModule
from ansible_collections.meshfed.istio.plugins.module_utils import _observed

k8s_unchanged = FilterModule().filters()["k8s_unchanged"]

SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "istio-eastwestgateway", "namespace": "istio-system"},
    "spec": {"type": "LoadBalancer", "externalIPs": ["198.51.100.1"], "clusterIP": "10.0.0.9"},
}
OBSERVED = _observed.index([SERVICE])


def patch(*ips, namespace="istio-system"):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "istio-eastwestgateway", "namespace": namespace}, "spec": {"externalIPs": list(ips)}}


def test_one_object_or_a_list():
    assert k8s_unchanged(patch("198.51.100.1"), OBSERVED) is True
    assert k8s_unchanged([patch("198.51.100.1")], OBSERVED) is True
    assert k8s_unchanged(patch("198.51.100.2"), OBSERVED) is False


def test_nothing_read_means_write():
    assert k8s_unchanged(patch("198.51.100.1")) is False
    assert k8s_unchanged(patch("198.51.100.1"), None) is False


def test_default_namespace():
    unnamespaced = patch("198.51.100.1")
    del unnamespaced["metadata"]["namespace"]
    assert k8s_unchanged(unnamespaced, OBSERVED) is False
    assert k8s_unchanged(unnamespaced, OBSERVED, "istio-system") is True


@pytest.mark.parametrize(("desired", "observed"), [("Service", OBSERVED), ([patch(), "x"], OBSERVED), (7, OBSERVED), (patch(), ["x"])])
def test_refuses_what_it_cannot_judge(desired, observed):
    with pytest.raises(AnsibleFilterError, match="k8s_unchanged"):
        k8s_unchanged(desired, observed)
