#!/usr/bin/env bash
# Commit habits (make commits, part of make check): every commit after BASE - merges aside, they carry the
# lead's fixed subject - has a subject of at most 72 characters and a body (the why). BASE is main's head when
# the check came in, so older history is not rewritten. A clone without BASE (shallow, or not this history)
# and a copy without git skip the check with a message.
set -euo pipefail
BASE=9d501c9151e92d6dc5b8a7fef09385254c37afb8
MAX=72
cd "$(dirname "$0")/.."
skip() { echo "commits: skipped: $*"; exit 0; }
git rev-parse --git-dir >/dev/null 2>&1 || skip "not a git checkout"
git cat-file -e "$BASE^{commit}" 2>/dev/null || skip "the base commit ${BASE:0:12} is not in this clone's history (shallow clone?)"
git merge-base --is-ancestor "$BASE" HEAD || skip "HEAD does not descend from the base commit ${BASE:0:12}"
bad=0 count=0
for commit in $(git rev-list --no-merges "$BASE..HEAD"); do
  count=$((count + 1))
  subject="$(git log -1 --format=%s "$commit")"
  body="$(git log -1 --format=%b "$commit" | grep -v '^[[:space:]]*$' || true)"
  if [ "${#subject}" -gt "$MAX" ]; then
    echo "commits: ${commit:0:12} subject is ${#subject} characters (at most $MAX): $subject" >&2; bad=1
  fi
  if [ -z "$body" ]; then
    echo "commits: ${commit:0:12} has no body (say why in it): $subject" >&2; bad=1
  fi
done
[ "$bad" = 0 ] || exit 1
echo "commits: $count since ${BASE:0:12}, each with a subject of at most $MAX characters and a body"
