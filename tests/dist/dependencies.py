"""Print the directories of the ansible package's copies of the collections a tarball depends on.

make dist installs the tarball with exactly these, so a dependency missing from galaxy.yml is
missing from the install too, and one whose bound the ansible package does not meet fails it.
Usage: dependencies.py TARBALL
"""

from __future__ import annotations

import json
import sys
import tarfile

import ansible_collections


def declared(tarball: str) -> list[str]:
    with tarfile.open(tarball) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    return sorted(manifest["collection_info"]["dependencies"])


def main() -> int:
    roots = list(ansible_collections.__path__)
    missing = []
    for name in declared(sys.argv[1]):
        namespace, collection = name.split(".")
        for root in roots:
            path = f"{root}/{namespace}/{collection}"
            try:
                with open(f"{path}/MANIFEST.json", encoding="utf-8"):
                    print(path)
                    break
            except FileNotFoundError:
                continue
        else:
            missing.append(name)
    if missing:
        print(f"dist: {', '.join(missing)} not in the ansible package ({', '.join(roots)}); no Galaxy server here to get it from", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
