"""The rotation run against in-memory clusters whose fake istiod copies root-cert.pem into istio-ca-root-cert one read
later: phases in order, the invariant after every write, resuming, reruns that write nothing, refusals."""

from __future__ import annotations

import json
import os
import signal

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _k8s, _pki, _pki_store, _rotate_ca, _rotation, _trust, _workloads

CLUSTERS = ("east", "west", "edge")
PRIMARY = {"edge": "east"}


class World:
    """Clusters of one mesh; a remote's istio-ca-root-cert follows its primary's cacerts (what that istiod copies)."""

    def __init__(self, pki_dir: str, flags: bool = True):
        self.data = {name: {key: _pki_store.read_optional(os.path.join(pki_dir, name, key)) for key in _pki.BUNDLE_KEYS} for name in CLUSTERS}
        self.version = dict.fromkeys(CLUSTERS, 1)
        self.published = {name: self.data[PRIMARY.get(name, name)]["root-cert.pem"] for name in CLUSTERS}
        self.flags, self.writes, self.down, self.lag, self.history = flags, [], set(), True, []
        self.fail_after_writes = None

    def phases(self, old: str, new: str) -> list[tuple]:
        """Each cluster's phase after each write."""
        return [tuple(_rotation.cluster_phase(t, old, new)[0] for t in trusts) for trusts in self.history]

    def snapshot(self) -> list[_rotation.ClusterTrust]:
        return [
            _rotation.ClusterTrust(
                name,
                self.data[name]["root-cert.pem"],
                _rotation.signer_of(self.data[name]["ca-cert.pem"], self.data[name]["root-cert.pem"]),
                (tuple(_rotation.fingerprints(self.published[name])),),
                PRIMARY.get(name, ""),
            )
            for name in CLUSTERS
        ]


class FakeApi:
    def __init__(self, world: World, name: str):
        self.world, self.name = world, name

    def read(self, flags: bool) -> _rotate_ca.Observed:
        world = self.world
        if self.name in world.down:
            raise _k8s.K8sUnreachable(f"{self.name} is unreachable")
        source = PRIMARY.get(self.name, self.name)
        observed = _rotate_ca.Observed(
            dict(world.data[self.name]),
            str(world.version[self.name]),
            {"istio-system": world.published[self.name], "default": world.published[self.name]},
            False,
            [] if world.flags else ["istiod Deployment istiod has ISTIO_MULTIROOT_MESH=<unset>"],
        )
        world.published[self.name] = world.data[source]["root-cert.pem"]  # istiod catches up after this read
        if not world.lag:
            observed.root_certs = dict.fromkeys(observed.root_certs, world.published[self.name])
        return observed

    def replace(self, data: dict, resource_version: str) -> dict:
        world = self.world
        if world.fail_after_writes is not None and len(world.writes) >= world.fail_after_writes:
            raise _k8s.K8sUnreachable(f"{self.name} is unreachable")
        assert resource_version == str(world.version[self.name]), "write on a stale version"
        assert sorted(data) == sorted(_pki.BUNDLE_KEYS), "cacerts must be written whole"
        before = world.data[self.name]["root-cert.pem"]
        assert _rotation.accepted_by_istiod(before, data["root-cert.pem"]) or before == data["root-cert.pem"], "istiod would refuse"
        world.data[self.name] = dict(data)
        world.version[self.name] += 1
        world.writes.append(self.name)
        # the independent check: after every write, every signing root is trusted in every cacerts
        trusts = world.snapshot()
        broken = [v for v in _rotation.violations(trusts) if v.where == "cacerts"]
        assert not broken, broken
        world.history.append(trusts)
        return dict(data)


@pytest.fixture
def pki_dir(tmp_path):
    dest = str(tmp_path / "pki")
    plan = _pki_store.decide(_pki_store.PkiOptions(dest=dest, clusters=CLUSTERS, key_algorithm="ecdsa-p256"))
    _pki_store.apply(plan)
    return dest


def members(world: World) -> list[_rotate_ca.RotationTarget]:
    return [_rotate_ca.RotationTarget(name, name, PRIMARY.get(name, ""), FakeApi(world, name)) for name in CLUSTERS]


def rotate(pki_dir: str, world: World, check: bool = False, **options) -> dict:
    options.setdefault("rotation_id", "r1")
    opts = _rotate_ca.Options(pki_dir=pki_dir, settle_timeout=5, **options)
    clock = iter(range(10**6))
    return _rotate_ca.run(opts, members(world), check, sleep=lambda _s: None, clock=lambda: next(clock))


def root_fp(pki_dir: str, *rel: str) -> str:
    return _pki.fingerprint(_pki.load_cert(_pki_store.read_optional(os.path.join(pki_dir, *rel, "root-cert.pem")), "root"))


def test_root_rotation_goes_phase_by_phase_then_a_rerun_writes_nothing(pki_dir):
    world = World(pki_dir)
    old = root_fp(pki_dir)
    world.roots = (old, "")
    plan = rotate(pki_dir, world, check=True)
    assert plan["phases"] == [1, 2, 3] and world.writes == [] and plan["changed"]
    assert not os.path.exists(os.path.join(pki_dir, "rotations"))
    # the new root is staged before the first cluster write; phases are then checked per write by FakeApi
    world.roots = (old, "")
    result = rotate(pki_dir, world, target_phase=1)
    new = root_fp(pki_dir, "rotations", "r1", "new")
    assert result["phases"] == [1] and world.writes == sorted(CLUSTERS)
    result = rotate(pki_dir, world)
    assert result["phases"] == [2, 3] and result["done"]
    phases = world.phases(old, new)
    assert phases[0] == (1, 0, 0) and phases[-1] == (3, 3, 3) and len(phases) == 9
    assert all(max(p) - min(p) <= 1 for p in phases), phases
    assert root_fp(pki_dir) == new
    assert root_fp(pki_dir, "rotations", "r1", "old") == old
    assert os.path.exists(os.path.join(pki_dir, "rotations", "r1", "old", "root-key.pem"))
    state = json.loads(_pki_store.read_optional(os.path.join(pki_dir, "rotations", "r1", "state.json")))
    assert state["status"] == "done"
    for name in CLUSTERS:  # the PKI directory now holds exactly what each cluster has: the site playbook pushes nothing
        for key in _pki.BUNDLE_KEYS:
            assert world.data[name][key] == _pki_store.read_optional(os.path.join(pki_dir, name, key)), (name, key)
    writes = len(world.writes)
    again = rotate(pki_dir, world)
    assert not again["changed"] and len(world.writes) == writes and again["done"]
    assert not rotate(pki_dir, world, check=True)["changed"]


def test_interrupted_after_one_cluster_resumes(pki_dir):
    world = World(pki_dir)
    world.roots = (root_fp(pki_dir), "")
    world.fail_after_writes = 4  # phase 1 in all three, phase 2 in one: then the API is gone
    with pytest.raises(_rotate_ca.RotateError, match="resumes"):
        rotate(pki_dir, world)
    assert sorted(world.phases(world.roots[0], root_fp(pki_dir, "rotations", "r1", "new"))[-1]) == [1, 1, 2]
    world.fail_after_writes = None
    result = rotate(pki_dir, world)
    assert result["phases"] == [2, 3] and result["done"]
    assert len(world.writes) == 9


class Killed(BaseException):
    pass


def test_the_test_only_kill_point_ends_the_run_after_exactly_n_writes_and_is_inert_unset(pki_dir, monkeypatch):
    signals = []

    def kill(pid, sig):
        signals.append((pid, sig))
        raise Killed

    monkeypatch.setattr(_rotate_ca.os, "kill", kill)
    world = World(pki_dir)
    world.roots = (root_fp(pki_dir), "")
    monkeypatch.setenv(_rotate_ca.KILL_AFTER_WRITES, "4")
    rotate(pki_dir, world, check=True)  # a plan writes nothing, so nothing kills it
    with pytest.raises(Killed):
        rotate(pki_dir, world)
    assert len(world.writes) == 4 and signals == [(os.getpid(), signal.SIGKILL)]
    monkeypatch.delenv(_rotate_ca.KILL_AFTER_WRITES)
    result = rotate(pki_dir, world)
    assert result["phases"] == [2, 3] and result["done"] and len(world.writes) == 9 and len(signals) == 1


def test_missing_flags_refuse_with_the_fix_and_nothing_is_written(pki_dir):
    world = World(pki_dir, flags=False)
    with pytest.raises(_rotate_ca.RotateError, match="re-run the site playbook with control_plane_multiroot"):
        rotate(pki_dir, world)
    assert world.writes == [] and not os.path.exists(os.path.join(pki_dir, "rotations"))


def test_an_unreachable_cluster_is_named_and_nothing_is_written(pki_dir):
    world = World(pki_dir)
    world.down.add("west")
    with pytest.raises(_rotate_ca.RotateError, match="west"):
        rotate(pki_dir, world)
    assert world.writes == []


def test_clusters_on_a_root_the_pki_directory_does_not_know_are_refused(pki_dir, tmp_path):
    world = World(pki_dir)
    other = str(tmp_path / "other")
    _pki_store.apply(_pki_store.decide(_pki_store.PkiOptions(dest=other, clusters=CLUSTERS, key_algorithm="ecdsa-p256")))
    world.data["west"] = {key: _pki_store.read_optional(os.path.join(other, "west", key)) for key in _pki.BUNDLE_KEYS}
    with pytest.raises(_rotate_ca.RotateError, match="disagree with the PKI directory.*west"):
        rotate(pki_dir, world)
    assert world.writes == [] and not os.path.exists(os.path.join(pki_dir, "rotations"))


def test_an_imported_new_root_that_is_not_a_ca_or_is_the_old_root_is_refused(pki_dir, tmp_path):
    world = World(pki_dir)
    with pytest.raises(_rotate_ca.RotateError, match="is the mesh's current root"):
        rotate(pki_dir, world, new_root_cert_src=os.path.join(pki_dir, "root-cert.pem"), new_root_key_src=os.path.join(pki_dir, "root-key.pem"))
    leaf = os.path.join(pki_dir, "east", "ca-cert.pem")
    with pytest.raises(_rotate_ca.RotateError, match="new_root_cert_src"):
        rotate(pki_dir, world, new_root_cert_src=leaf, new_root_key_src=os.path.join(pki_dir, "east", "ca-key.pem"))
    assert world.writes == [] and not os.path.exists(os.path.join(pki_dir, "rotations"))


def test_a_cluster_two_phases_behind_is_refused_and_nothing_is_written(pki_dir):
    world = World(pki_dir)
    original = {key: _pki_store.read_optional(os.path.join(pki_dir, "west", key)) for key in _pki.BUNDLE_KEYS}
    rotate(pki_dir, world, target_phase=2)
    world.data["west"] = original  # planted: west back on the old root alone while the others sign under the new one
    writes = list(world.writes)
    with pytest.raises(_rotate_ca.RotateError, match="west: at phase 0.*a phase was skipped"):
        rotate(pki_dir, world)
    assert world.writes == writes


def test_intermediate_rotation_keeps_the_root_bytes_and_a_rerun_writes_nothing(pki_dir):
    world = World(pki_dir)
    before = {name: dict(world.data[name]) for name in CLUSTERS}
    world.roots = (root_fp(pki_dir), "")
    assert rotate(pki_dir, world, check=True, mode="intermediate", subset=("west",))["changed"]
    assert world.writes == [] and not os.path.exists(os.path.join(pki_dir, "rotations"))
    result = rotate(pki_dir, world, mode="intermediate", subset=("west",))
    assert result["changed"] and world.writes == ["west"]
    assert world.data["west"]["root-cert.pem"] == before["west"]["root-cert.pem"]
    assert world.data["west"]["ca-cert.pem"] != before["west"]["ca-cert.pem"]
    assert world.data["east"] == before["east"]
    assert _pki_store.read_optional(os.path.join(pki_dir, "rotations", "r1", "old", "west", "ca-cert.pem")) == before["west"]["ca-cert.pem"]
    again = rotate(pki_dir, world, mode="intermediate", subset=("west",))
    assert not again["changed"] and world.writes == ["west"]
    with pytest.raises(_rotate_ca.RotateError, match="same rotate_ca_clusters"):
        rotate(pki_dir, world, mode="intermediate")
    with pytest.raises(_rotate_ca.RotateError, match="intermediate rotation"):
        rotate(pki_dir, world)
    # and then a root rotation under another id
    assert rotate(pki_dir, world, rotation_id="r2")["done"]


@pytest.mark.parametrize("rotation_id", ["", "R1", "../x", "a/b", "-x"])
def test_a_bad_rotation_id_is_refused(pki_dir, rotation_id):
    with pytest.raises(_rotate_ca.RotateError, match="rotate_ca_id"):
        rotate(pki_dir, World(pki_dir), rotation_id=rotation_id)


def test_the_site_playbook_pushes_no_bundle_while_a_root_rotation_is_in_progress(pki_dir):
    world = World(pki_dir)
    assert _trust.bundle_for_push(pki_dir, "east")[1] == []
    rotate(pki_dir, world, target_phase=1)
    assert any("root rotation r1 is in progress" in problem for problem in _trust.bundle_for_push(pki_dir, "east")[1])
    rotate(pki_dir, world)
    assert _trust.bundle_for_push(pki_dir, "east")[1] == []


def test_killed_while_the_pki_directory_is_promoted_the_next_run_finishes_it(pki_dir, monkeypatch):
    world = World(pki_dir)
    old = root_fp(pki_dir)
    real = _rotate_ca._io.roll_forward

    def crash(dest, commit):
        if os.path.isdir(os.path.join(commit, "rotations", "r1", "old")):
            raise OSError(5, "killed", commit)  # the journal is committed; nothing of it moved yet
        real(dest, commit)

    monkeypatch.setattr(_rotate_ca._io, "roll_forward", crash)
    with pytest.raises(_rotate_ca.RotateError):
        rotate(pki_dir, world)
    assert root_fp(pki_dir) == old
    monkeypatch.setattr(_rotate_ca._io, "roll_forward", real)
    assert rotate(pki_dir, world, check=True)["done"]  # check mode reads the journal as if it had been moved
    assert root_fp(pki_dir) == old
    writes = len(world.writes)
    result = rotate(pki_dir, world)
    assert result["done"] and len(world.writes) == writes
    assert root_fp(pki_dir) != old and root_fp(pki_dir, "rotations", "r1", "old") == old
    assert not rotate(pki_dir, world)["changed"]


def test_a_second_run_at_the_same_time_is_refused(pki_dir):
    import fcntl

    with open(os.path.join(pki_dir, ".rotate-ca.lock"), "a", encoding="ascii") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        world = World(pki_dir)
        with pytest.raises(_rotate_ca.RotateError, match="another rotate_ca run"):
            rotate(pki_dir, world)
        assert world.writes == []


@pytest.mark.parametrize(
    "planted, message",
    [
        (b"not json", "is not JSON"),
        (b'{"mode": "other"}', "is not a rotation state"),
        (b'{"mode": "root", "status": "done", "new_root": "00"}', "disagree"),
        (b'{"mode": "root", "status": "started", "old_root": "00", "new_root": "00"}', "disagrees with rotation r1"),
    ],
)
def test_a_planted_rotation_state_is_refused_and_nothing_is_written(pki_dir, planted, message):
    world = World(pki_dir)
    rotate(pki_dir, world, target_phase=1)
    writes = list(world.writes)
    with open(os.path.join(pki_dir, "rotations", "r1", "state.json"), "wb") as handle:
        handle.write(planted)
    with pytest.raises(_rotate_ca.RotateError, match=message):
        rotate(pki_dir, world)
    assert world.writes == writes


def test_an_istiod_that_does_not_catch_up_stops_the_rotation_after_its_phase(pki_dir):
    world = World(pki_dir)
    frozen = dict(world.published)

    class Stuck(FakeApi):
        def read(self, flags):
            observed = super().read(flags)
            observed.root_certs = dict.fromkeys(observed.root_certs, frozen[self.name])  # istiod down: nothing copied
            return observed

    stuck = [_rotate_ca.RotationTarget(n, n, PRIMARY.get(n, ""), Stuck(world, n)) for n in CLUSTERS]
    clock = iter(range(10**6))
    opts = _rotate_ca.Options(pki_dir=pki_dir, rotation_id="r1", settle_timeout=5)
    with pytest.raises(_rotate_ca.RotateError, match="does not hold its cacerts bundle"):
        _rotate_ca.run(opts, stuck, False, sleep=lambda _s: None, clock=lambda: next(clock))
    assert sorted(world.writes) == sorted(CLUSTERS)  # phase 1 only: phase 2 never starts before istio-ca-root-cert caught up
    assert rotate(pki_dir, world)["done"]  # istiod back: the rerun resumes


class Restarts:
    """The workload restart hook: records each call with the writes made before it; fails while `failing`."""

    def __init__(self, world: World, failing: bool = False):
        self.world, self.failing, self.calls = world, failing, []

    def __call__(self, names, token, check_mode):
        self.calls.append((tuple(names), token, check_mode, len(self.world.writes)))
        if self.failing:
            raise _workloads.RestartError("context 'east': the restart did not finish within 5 s: Deployment shop/web (0 of 1 updated replicas available)")
        return {name: {"changed": not check_mode, "restarted": [f"Deployment shop/{name}"]} for name in names}


def test_root_rotation_restarts_workloads_after_phase_2_before_phase_3_and_resumes(pki_dir):
    world = World(pki_dir)
    restarts = Restarts(world)
    plan = rotate(pki_dir, world, check=True, restart=restarts)
    assert plan["phases"] == [1, 2, 3] and restarts.calls == [(CLUSTERS, "rotate_ca/r1", True, 0)] and set(plan["restarts"]) == set(CLUSTERS)
    restarts.calls.clear()
    assert rotate(pki_dir, world, target_phase=2, restart=restarts)["phases"] == [1, 2] and restarts.calls == []
    restarts.failing = True
    with pytest.raises(_rotate_ca.RotateError, match="shop/web.*stops before phase 3"):
        rotate(pki_dir, world, restart=restarts)
    assert len(world.writes) == 6  # phases 1 and 2 only: the old root is still trusted everywhere
    restarts.failing = False
    result = rotate(pki_dir, world, restart=restarts)
    assert result["phases"] == [3] and result["done"] and result["restarts"]
    assert [call[3] for call in restarts.calls] == [6, 6]  # each time after phase 2, before any phase 3 write
    again = rotate(pki_dir, world, restart=restarts)
    assert not again["changed"] and "restarts" not in again and len(restarts.calls) == 2  # a finished rotation restarts nothing


@pytest.mark.parametrize(("subset", "served"), [(("west",), ("west",)), (("east",), ("east", "edge")), ((), CLUSTERS)])
def test_intermediate_rotation_restarts_the_rotated_clusters_and_the_remotes_they_serve(pki_dir, subset, served):
    world = World(pki_dir)
    restarts = Restarts(world)
    assert rotate(pki_dir, world, check=True, mode="intermediate", subset=subset, restart=restarts)["changed"]
    assert restarts.calls == [(served, "rotate_ca/r1", True, 0)]
    restarts.failing = True
    with pytest.raises(_rotate_ca.RotateError, match="new intermediates are in place; a rerun resumes the restart"):
        rotate(pki_dir, world, mode="intermediate", subset=subset, restart=restarts)
    writes = len(world.writes)
    assert writes == len(subset or CLUSTERS)
    restarts.failing = False
    result = rotate(pki_dir, world, mode="intermediate", subset=subset, restart=restarts)
    assert result["done"] and result["changed"] and len(world.writes) == writes
    assert [call[:3] for call in restarts.calls[1:]] == [(served, "rotate_ca/r1", False)] * 2
    again = rotate(pki_dir, world, mode="intermediate", subset=subset, restart=restarts)
    assert not again["changed"] and len(restarts.calls) == 3


def _tree(top: str) -> dict:
    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _dirs, files in os.walk(top) for f in files} | {
        d: None for d, _dirs, _files in os.walk(top)
    }


@pytest.mark.parametrize("mode", ["root", "intermediate"])
def test_check_mode_leaves_the_pki_directory_as_it_was(pki_dir, mode):
    before = _tree(pki_dir)
    world = World(pki_dir)
    assert rotate(pki_dir, world, check=True, mode=mode)["changed"]
    assert _tree(pki_dir) == before and world.writes == []


def test_a_stale_istio_ca_root_cert_istiod_does_not_manage_is_named_where_it_is(pki_dir):
    # a namespace istiod leaves alone (kube-system, or outside its discoverySelectors) keeps an old istio-ca-root-cert, or
    # someone planted one: the rotation cannot tell that istiod caught up, and the message must say where to look
    world = World(pki_dir)
    stale = world.published["west"]

    class Planted(FakeApi):
        def read(self, flags):
            observed = super().read(flags)
            if self.name == "west":
                observed.root_certs["kube-system"] = stale
            return observed

    planted = [_rotate_ca.RotationTarget(n, n, PRIMARY.get(n, ""), Planted(world, n)) for n in CLUSTERS]
    clock = iter(range(10**6))
    opts = _rotate_ca.Options(pki_dir=pki_dir, rotation_id="r1", settle_timeout=5)
    with pytest.raises(_rotate_ca.RotateError, match=r"istio-ca-root-cert of west \(namespaces kube-system\) does not hold"):
        _rotate_ca.run(opts, planted, False, sleep=lambda _s: None, clock=lambda: next(clock))
