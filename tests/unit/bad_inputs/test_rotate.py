# -*- coding: utf-8 -*-
"""Bad inputs of the CA rotation (meshfed.istio.rotate_ca): each is refused before any cluster is read or any file
written, naming the option. The rotation id names a directory under the PKI directory (rotations/<id>)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _rotate_ca

from cases import Case

CASES: list[Case] = [
    Case("rotate-id-empty", "rotate_ca_id", {"rotation_id": ""}, "rotate_ca_id '' is not a name for a rotation"),
    Case("rotate-id-path", "rotate_ca_id", {"rotation_id": "../r1"}, "rotate_ca_id '../r1' is not a name for a rotation"),
    Case("rotate-id-trailing-newline", "rotate_ca_id", {"rotation_id": "r1\n"}, "rotate_ca_id 'r1\\n' is not a name for a rotation", "accepted"),
    Case("rotate-id-upper-case", "rotate_ca_id", {"rotation_id": "R1"}, "lower-case letters, digits, '.', '_' and '-', at most 63"),
    Case("rotate-phase-out-of-range", "rotate_ca_phase", {"rotation_id": "r1", "target_phase": 4}, "rotate_ca_phase must be 1, 2 or 3, not 4"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_naming_the_option_and_nothing_is_written(case, tmp_path):
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    with pytest.raises(_rotate_ca.RotateError) as info:
        _rotate_ca.run(_rotate_ca.Options(pki_dir=str(pki_dir), **case.value), [], check_mode=False)
    assert case.refusal in str(info.value)
    assert case.option in str(info.value)
    assert os.listdir(pki_dir) == []
