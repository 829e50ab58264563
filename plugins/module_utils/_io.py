# -*- coding: utf-8 -*-
# Copyright: meshfed.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to meshfed.istio: file I/O on the control node, in one place.

write_tree() changes several files of a directory as one step that a crash cannot leave half
done. Its journal lives in the directory itself:

1. stage: every new file is written, fsynced, into ``<dest>/.staging-<id>/<relative path>``;
2. check: the caller reads the staged files back and may refuse them (the staging is removed);
3. commit: ``.staging-<id>`` is renamed to ``.commit-<id>`` (one atomic rename, then fsync);
4. roll forward: each file is moved over its live path with os.replace, in path order, then the
   empty journal is removed.

A crash before 3 leaves the live files as they were (the staging is discarded); after 3 the live
files become the new ones, whatever step the crash interrupted: recover() finishes the moves.
Both are deterministic, so the next run always starts from a consistent directory.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

STAGING = ".staging-"
COMMIT = ".commit-"
TEMPORARY = ".tmp-"
DIRECTORY_MODE = 0o700


def read_optional(path: str) -> bytes | None:
    """The bytes of a file, None when it does not exist; OSError for anything else."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directory(path: str) -> None:
    """mkdir -p with mode 0700, each new directory made durable in its parent."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path.rstrip("/"))
    if parent and parent != path:
        make_directory(parent)
    os.mkdir(path, DIRECTORY_MODE)
    fsync_directory(parent or ".")


def _write_new(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _files_under(top: str) -> list[str]:
    """Relative paths of the regular files under top, in the fixed order of the roll-forward."""
    found = []
    for root, _dirs, files in os.walk(top):
        found.extend(os.path.relpath(os.path.join(root, name), top) for name in files)
    return sorted(found, key=lambda rel: (rel.count(os.sep), rel))


def remove_tree(top: str) -> None:
    """Remove a journal directory (files, then directories, deepest first); nothing follows a symlink."""
    for root, dirs, files in os.walk(top, topdown=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            if not os.path.islink(os.path.join(root, name)):
                os.rmdir(os.path.join(root, name))
    os.rmdir(top)
    fsync_directory(os.path.dirname(top))


@dataclass
class Leftovers:
    """What an interrupted run left in a directory: journals and stray temporary files."""

    commits: list[str] = field(default_factory=list)
    stagings: list[str] = field(default_factory=list)
    temporaries: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.commits or self.stagings or self.temporaries)

    def pending(self) -> dict[str, str]:
        """Relative path -> file in a commit journal still to be moved there (the later commit wins)."""
        moves: dict[str, str] = {}
        for commit in self.commits:
            moves.update({rel: os.path.join(commit, rel) for rel in _files_under(commit)})
        return moves


def leftovers(dest: str, subdirectories=()) -> Leftovers:
    """Scan dest (and these subdirectories of it) for journals and temporary files; reads only."""
    found = Leftovers()
    if not os.path.isdir(dest):
        return found
    for entry in sorted(os.listdir(dest)):
        path = os.path.join(dest, entry)
        if entry.startswith(COMMIT) and os.path.isdir(path) and not os.path.islink(path):
            found.commits.append(path)
        elif entry.startswith(STAGING) and os.path.isdir(path) and not os.path.islink(path):
            found.stagings.append(path)
    for directory in (dest, *(os.path.join(dest, sub) for sub in subdirectories)):
        if os.path.isdir(directory) and not os.path.islink(directory):
            found.temporaries.extend(
                os.path.join(directory, entry)
                for entry in sorted(os.listdir(directory))
                if entry.startswith(TEMPORARY) and os.path.isfile(os.path.join(directory, entry))
            )
    return found


def roll_forward(dest: str, commit: str) -> None:
    """Move every file of a commit journal over its live path, then remove the journal."""
    touched = []
    for rel in _files_under(commit):
        target = os.path.join(dest, rel)
        make_directory(os.path.dirname(target))
        os.replace(os.path.join(commit, rel), target)
        if os.path.dirname(target) not in touched:
            touched.append(os.path.dirname(target))
    for directory in touched:
        fsync_directory(directory)
    remove_tree(commit)


def recover(dest: str, found: Leftovers) -> None:
    """Bring dest back to a consistent state: finish committed changes, drop uncommitted ones."""
    for commit in found.commits:
        roll_forward(dest, commit)
    for staging in found.stagings:
        remove_tree(staging)
    for temporary in found.temporaries:
        os.unlink(temporary)
        fsync_directory(os.path.dirname(temporary))


def write_tree(dest: str, files: dict[str, tuple[bytes, int]], check=None) -> None:
    """Replace files (relative path -> (data, mode)) under dest all together, or not at all.

    check, when given, is called with a reader of the directory as it will be after the change
    (the staged file where there is one, else the live one); whatever it raises leaves dest as it was.
    """
    make_directory(dest)
    name = f"{time.time_ns():020d}-{os.getpid()}"
    staging = os.path.join(dest, STAGING + name)
    os.mkdir(staging, DIRECTORY_MODE)
    try:
        for rel in sorted(files, key=lambda rel: (rel.count(os.sep), rel)):
            path = os.path.join(staging, rel)
            make_directory(os.path.dirname(path))
            _write_new(path, *files[rel])
        for root, _dirs, _files in os.walk(staging, topdown=False):
            fsync_directory(root)
        if check is not None:
            check(lambda rel: read_optional(os.path.join(staging, rel) if rel in files else os.path.join(dest, rel)))
    except BaseException:
        remove_tree(staging)
        raise
    commit = os.path.join(dest, COMMIT + name)
    os.rename(staging, commit)
    fsync_directory(dest)
    roll_forward(dest, commit)


def write_atomic(path: str, data: bytes, mode: int) -> None:
    """One file: written beside its target, fsynced, renamed over it, the rename made durable."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=DIRECTORY_MODE, exist_ok=True)
    temporary = os.path.join(directory, f"{TEMPORARY}{time.time_ns()}-{os.getpid()}")
    try:
        _write_new(temporary, data, mode)
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise
    fsync_directory(directory)
