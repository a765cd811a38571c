"""Checks that .venv holds everything stoker[torch,test] needs, transitively,
extras included, at versions its requirements accept, but for triton, which
python/requirements-test.lock leaves out on purpose (scripts/python-env). Exit 1 with the
list when something is missing: the lock is stale (./scripts/python-env --relock)."""

import re
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LEFT_OUT = re.compile(r"^triton$", re.IGNORECASE)


def main() -> int:
    problems = []
    seen = set()
    todo = [("stoker", frozenset({"torch", "test"}))]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            problems.append(f"{name}: not installed")
            continue
        for line in requires:
            req = Requirement(line)
            wanted = req.marker is None or any(
                req.marker.evaluate({"extra": e}) for e in extras | {""}
            )
            if not wanted or LEFT_OUT.match(req.name):
                continue
            try:
                have = distribution(req.name).version
            except PackageNotFoundError:
                problems.append(f"{name} requires {req}: not installed")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{name} requires {req}: {have} installed")
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
