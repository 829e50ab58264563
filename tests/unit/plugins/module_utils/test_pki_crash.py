"""The PKI directory is all or nothing: a run killed at any file-system step leaves a directory the
next run recovers to exactly the old state or exactly the new one, then converges."""

from __future__ import annotations

import datetime
import os
import shutil
import stat

import pytest

from ansible_collections.meshfed.istio.plugins.module_utils import _io, _pkcs8, _pki, _pki_store

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
# Every call that changes the file system, or makes a change durable.
STEPS = ("open", "write", "fsync", "fchmod", "mkdir", "rename", "replace", "unlink", "rmdir")
KILLED = 86


@pytest.fixture(autouse=True)
def _no_disk_flush(monkeypatch):
    """fsync is still a step a test can die at, but flushes nothing: durability is not testable here."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(_pkcs8, "KDF_ITERATIONS", 1000)  # the key's protection is tested elsewhere


def options(dest, **changes):
    values = dict(dest=str(dest), clusters=("east", "west"), key_algorithm="ecdsa-p256")
    values.update(changes)
    return _pki_store.PkiOptions(**values)


def snapshot(directory) -> dict:
    """Every entry under directory, hidden ones included: (mode, bytes) for files, None for directories."""
    tree = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            tree[os.path.relpath(os.path.join(root, name), directory)] = None
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                tree[os.path.relpath(path, directory)] = (stat.S_IMODE(os.stat(path).st_mode), handle.read())
    return tree


def expected_after(before: dict, plan, dest) -> dict:
    after = dict(before)
    for path, data in plan.writes.items():
        rel = os.path.relpath(path, dest)
        after[rel] = (0o600 if os.path.basename(rel) in _pki_store.KEY_FILES else 0o644, data)
        if os.path.dirname(rel):
            after[os.path.dirname(rel)] = None
    return after


def killed_at(step: int, function, *args) -> bool:
    """Run function in a child that dies (os._exit) at the step-th file-system call; whether it died."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        calls = [0]

        def dying(original):
            def call(*a, **k):
                calls[0] += 1
                if calls[0] == step:
                    os._exit(KILLED)
                return original(*a, **k)

            return call

        for name in STEPS:
            setattr(os, name, dying(getattr(os, name)))
        try:
            function(*args)
        except BaseException:  # noqa: BLE001 - any error is a failure the parent sees
            os._exit(1)
        os._exit(0)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    assert code in (0, KILLED), f"apply failed in the child at step {step} (exit {code})"
    return code == KILLED


def assert_consistent(dest, opts) -> None:
    """What the cacerts role would push is what istiod accepts, on one root, with nothing left over."""
    root_pem = (dest / "root-cert.pem").read_bytes()
    root = _pki.load_cert(root_pem, "root")
    key = _pki.load_key((dest / "root-key.pem").read_bytes(), "root key", opts.root_key_passphrase)
    assert _pki.key_matches(root, key)
    for cluster in opts.clusters:
        files = {name: (dest / cluster / name).read_bytes() for name in _pki.BUNDLE_KEYS}
        report, facts = _pki.check_bundle(files, NOW)
        assert report.usable, report.problems
        assert files["root-cert.pem"] == root_pem and facts["chain_root"] == _pki.fingerprint(root)
    assert not _io.leftovers(str(dest), opts.clusters)


SCENARIOS = {
    "first-run": (None, {}),
    "new-root-and-every-intermediate": (dict(), dict(force_root=True)),
    "key-encrypted": (dict(), dict(root_key_passphrase="s3cret")),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_killed_at_every_step_recovers_to_old_or_new_then_converges(tmp_path, scenario):
    first, changes = SCENARIOS[scenario]
    base = tmp_path / "base"
    if first is not None:
        _pki_store.apply(_pki_store.decide(options(base, **first), NOW))
    else:
        base.mkdir(mode=0o700)
    opts_base = options(base, **changes)
    plan = _pki_store.decide(opts_base, NOW)
    before = snapshot(base)
    after = expected_after(before, plan, base)
    outcomes = []
    step = 0
    while True:
        step += 1
        dest = tmp_path / f"run{step}"
        shutil.copytree(base, dest, symlinks=True)
        opts = options(dest, **changes)
        plan.options = opts
        plan.writes = {str(dest / os.path.relpath(path, base)): data for path, data in plan.writes.items()}
        died = killed_at(step, _pki_store.apply, plan)
        plan.writes = {str(base / os.path.relpath(path, dest)): data for path, data in plan.writes.items()}
        if not died:
            assert snapshot(dest) == after
            break
        rerun = _pki_store.decide(opts, NOW)  # reads through what the crash left: must not refuse
        _io.recover(str(dest), rerun.leftovers)
        recovered = snapshot(dest)
        assert recovered in (before, after), f"killed at step {step}: neither the old nor the new directory"
        outcomes.append(recovered == after)
        steady = options(dest, **{**changes, "force_root": False})
        _pki_store.apply(_pki_store.decide(steady, NOW))
        assert_consistent(dest, steady)
        assert not _pki_store.decide(steady, NOW).changed
        shutil.rmtree(dest)
    assert step > 10 and False in outcomes and True in outcomes  # both sides of the commit were hit


def test_recovery_killed_at_every_step_still_recovers(tmp_path):
    base = tmp_path / "base"
    _pki_store.apply(_pki_store.decide(options(base), NOW))
    plan = _pki_store.decide(options(base, force_root=True), NOW)
    after = expected_after(snapshot(base), plan, base)
    commit_step = None
    for step in range(1, 200):  # the first step at which the crash leaves a commit journal behind
        dest = tmp_path / "probe"
        shutil.copytree(base, dest)
        plan.options = options(dest)
        plan.writes = {str(dest / os.path.relpath(path, base)): data for path, data in plan.writes.items()}
        killed_at(step, _pki_store.apply, plan)
        plan.writes = {str(base / os.path.relpath(path, dest)): data for path, data in plan.writes.items()}
        if _io.leftovers(str(dest)).commits:
            commit_step = step
            break
        shutil.rmtree(dest)
    assert commit_step is not None
    crashed = tmp_path / "crashed"
    os.rename(dest, crashed)
    step = 0
    while True:
        step += 1
        dest = tmp_path / f"recover{step}"
        shutil.copytree(crashed, dest)
        died = killed_at(step, lambda: _io.recover(str(dest), _io.leftovers(str(dest), ("east", "west"))))
        _io.recover(str(dest), _io.leftovers(str(dest), ("east", "west")))
        assert snapshot(dest) == after
        shutil.rmtree(dest)
        if not died:
            break
    assert step > 5


def test_stray_temporary_key_files_are_removed_and_reported(tmp_path):
    dest = tmp_path / "pki"
    _pki_store.apply(_pki_store.decide(options(dest), NOW))
    before = snapshot(dest)
    (dest / "east" / ".tmp-k2j3.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    (dest / ".tmp-9x.pem").write_bytes(b"")
    plan = _pki_store.decide(options(dest), NOW)
    assert plan.changed and not plan.writes
    assert plan.recovery == ["removed the stray temporary file .tmp-9x.pem", "removed the stray temporary file east/.tmp-k2j3.pem"]
    _pki_store.apply(plan)
    assert snapshot(dest) == before
    assert not _pki_store.decide(options(dest), NOW).changed


def test_check_mode_reads_through_a_commit_journal_and_changes_nothing(tmp_path):
    dest = tmp_path / "pki"
    _pki_store.apply(_pki_store.decide(options(dest), NOW))
    plan = _pki_store.decide(options(dest, force_root=True), NOW)
    died_after_commit = None
    for step in range(1, 200):
        trial = tmp_path / f"t{step}"
        shutil.copytree(dest, trial)
        plan.options = options(trial)
        plan.writes = {str(trial / os.path.relpath(path, dest)): data for path, data in plan.writes.items()}
        killed_at(step, _pki_store.apply, plan)
        plan.writes = {str(dest / os.path.relpath(path, trial)): data for path, data in plan.writes.items()}
        found = _io.leftovers(str(trial))
        if found.commits and (trial / "east" / "ca-cert.pem").read_bytes() != (dest / "east" / "ca-cert.pem").read_bytes():
            died_after_commit = trial  # half moved: east has the new intermediate, other files are still old
            break
    assert died_after_commit is not None
    crashed = snapshot(died_after_commit)
    check = _pki_store.decide(options(died_after_commit), NOW)
    assert check.changed and check.recovery[0].startswith("finished an interrupted write: moved")
    assert check.root["fingerprint_sha256"] == plan.root["fingerprint_sha256"]  # the committed root, not the old one
    assert not check.writes  # after the roll-forward there is nothing left to write
    assert snapshot(died_after_commit) == crashed


def test_a_staged_directory_that_fails_its_check_is_never_swapped_in(tmp_path):
    dest = tmp_path / "pki"
    _pki_store.apply(_pki_store.decide(options(dest), NOW))
    before = snapshot(dest)
    plan = _pki_store.decide(options(dest, force_root=True), NOW)
    plan.writes[str(dest / "east" / "ca-key.pem")] = _pki.key_pem(_pki.generate_key("ecdsa-p256"))
    with pytest.raises(_pki.PkiError, match="failed their check, nothing was changed.*east: ca-key.pem does not match ca-cert.pem"):
        _pki_store.apply(plan)
    assert snapshot(dest) == before


class Durability:
    """The file-system calls of a run in order: fsync (of the file or directory its descriptor names), rename,
    replace and rmdir, with absolute paths."""

    def __init__(self, monkeypatch):
        self.events: list[tuple] = []
        for name in ("rename", "replace", "rmdir"):
            monkeypatch.setattr(os, name, self._recording(name, getattr(os, name)))
        monkeypatch.setattr(os, "fsync", lambda fd: self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))))

    def _recording(self, name, original):
        def call(*args, **kwargs):
            self.events.append((name, *(os.path.abspath(arg) for arg in args[:2])))
            return original(*args, **kwargs)

        return call

    def index(self, *event) -> int:
        assert event in self.events, f"{event} never happened: {self.events}"
        return self.events.index(event)

    def fsyncs(self, path: str, start: int = 0, end: int | None = None) -> list[int]:
        return [i for i, event in enumerate(self.events[start:end], start) if event == ("fsync", path)]


def assert_rolled_forward_durably(calls: Durability, dest: str, commit: str, rels: list[str]) -> None:
    """Each file moved out of the journal, each directory it went to fsynced after its last move and before the journal
    is removed (a crash then finds the files either still in the journal or durably in place, never lost)."""
    removed = calls.index("rmdir", commit)
    for rel in rels:
        moved = calls.index("replace", os.path.join(commit, rel), os.path.join(dest, rel))
        assert moved < removed
        last_into_directory = max(
            i for i, event in enumerate(calls.events) if event[0] == "replace" and os.path.dirname(event[2]) == os.path.dirname(os.path.join(dest, rel))
        )
        assert calls.fsyncs(os.path.dirname(os.path.join(dest, rel)), last_into_directory, removed), f"{rel}: its directory is not fsynced"
    assert calls.fsyncs(dest, removed), "the journal's removal is not made durable"


def test_every_file_is_fsynced_before_the_commit_and_every_directory_after(tmp_path, monkeypatch):
    dest = os.path.realpath(tmp_path / "pki")
    plan = _pki_store.decide(options(dest), NOW)
    calls = Durability(monkeypatch)
    _pki_store.apply(plan)
    [(_rename, staging, commit)] = [event for event in calls.events if event[0] == "rename"]
    assert os.path.basename(staging).startswith(_io.STAGING) and os.path.basename(commit).startswith(_io.COMMIT)
    committed = calls.events.index(("rename", staging, commit))
    rels = sorted(os.path.relpath(path, dest) for path in plan.writes)
    assert len(rels) == 2 + 4 * 2
    for rel in rels:  # the data of each staged file is on disk before the commit makes it the new state
        assert calls.fsyncs(os.path.join(staging, rel), 0, committed), f"{rel} is not fsynced before the commit"
    for directory in {os.path.dirname(os.path.join(staging, rel)) for rel in rels}:  # and the staged entries
        assert calls.fsyncs(directory, 0, committed), f"{directory} is not fsynced before the commit"
    first_move = min(i for i, event in enumerate(calls.events) if event[0] == "replace")
    assert calls.fsyncs(dest, committed, first_move), "the commit rename is not made durable before the files move"
    assert_rolled_forward_durably(calls, dest, commit, rels)


def test_the_roll_forward_of_an_interrupted_write_is_durable(tmp_path, monkeypatch):
    dest = os.path.realpath(tmp_path / "pki")
    _pki_store.apply(_pki_store.decide(options(dest), NOW))
    plan = _pki_store.decide(options(dest, force_root=True), NOW)
    with monkeypatch.context() as interrupted:
        interrupted.setattr(_io, "roll_forward", lambda dest, commit: None)  # the run dies right after its commit
        _pki_store.apply(plan)
    [commit] = _io.leftovers(dest).commits
    rels = sorted(os.path.relpath(path, dest) for path in plan.writes)
    assert sorted(_io.Leftovers(commits=[commit]).pending()) == rels
    calls = Durability(monkeypatch)
    rerun = _pki_store.decide(options(dest), NOW)
    assert not rerun.writes and rerun.leftovers.commits == [commit]
    _pki_store.apply(rerun)
    assert_rolled_forward_durably(calls, dest, commit, rels)
    assert_consistent(tmp_path / "pki", options(dest))
