"""Run one benchmark on two commits, interleaved, in one sitting: before/after ratios.

Each commit gets a git worktree of its own (under ``--work``); every round runs the
benchmark once from each tree, alternating which goes first, with ``PYTHONPATH``
pointing at that tree's ``src`` so the benchmark and every server process it starts
import that commit's inferq (the same virtualenv serves both). Drift on the machine
then hits both alike; compare the rounds' medians, never numbers from another day.

The benchmark's own output is kept per run in ``--work/<label>-<round>.log``; the
lines that match ``--grep`` are printed as they come::

    .venv/bin/python bench/interleave.py --before ea892d6 --after HEAD --rounds 3 \\
        --grep "inferq-" -- bench/queue_e2e.py --only inferq-sqlite --only inferq-pg \\
        --rounds 1 --no-wait --no-doc --claim-jobs 0
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worktree(work: Path, rev: str, label: str) -> Path:
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    path = work / f"{label}-{sha}"
    if not path.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-f", str(path), sha],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return path


def run(tree: Path, args: list[str], log: Path, grep: re.Pattern[str] | None, label: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=tree,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if grep is None or grep.search(line):
                print(f"[{label}] {line}", end="", flush=True)
        if proc.wait() != 0:
            raise SystemExit(f"{label}: the benchmark failed (exit {proc.returncode}); see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="a commit")
    parser.add_argument("--after", default="HEAD", help="a commit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/inferq-interleave"))
    parser.add_argument("--grep", help="print only the output lines matching this regex")
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="-- script.py [its arguments]")
    opts = parser.parse_args()
    args = opts.bench[1:] if opts.bench[:1] == ["--"] else opts.bench
    if not args:
        parser.error("name the benchmark script after --")
    opts.work.mkdir(parents=True, exist_ok=True)
    trees = {
        "before": worktree(opts.work, opts.before, "before"),
        "after": worktree(opts.work, opts.after, "after"),
    }
    grep = re.compile(opts.grep) if opts.grep else None
    for index in range(opts.rounds):
        order = ["before", "after"] if index % 2 == 0 else ["after", "before"]
        for label in order:
            run(trees[label], args, opts.work / f"{label}-{index + 1}.log", grep, label)


if __name__ == "__main__":
    main()
