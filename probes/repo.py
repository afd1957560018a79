"""The infrastructure repo as git sees it: HEAD, branch, modified and untracked files."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from probes.problem import Problem


@dataclass(frozen=True)
class RepoStatus:
    path: Path
    head: str | None
    branch: str | None
    modified: tuple[str, ...]
    untracked: tuple[str, ...]
    problem: Problem | None

    @property
    def clean(self) -> bool:
        return self.problem is None and not self.modified and not self.untracked


def status(path: Path) -> RepoStatus:
    """`git status --porcelain` of the repo; a missing repo or a non-git folder is a problem, not an error."""
    if not path.is_dir():
        missing = Problem("repo-missing", f"infrastructure repo {path} does not exist", "pass --infra-repo PATH")
        return RepoStatus(path, None, None, (), (), missing)
    try:
        head = _git(path, "rev-parse", "HEAD")
        branch = _git(path, "rev-parse", "--abbrev-ref", "HEAD")
        porcelain = _git(path, "status", "--porcelain=v1", "--untracked-files=all")
    except FileNotFoundError:
        return RepoStatus(path, None, None, (), (), Problem("git-missing", "git is not on PATH", "install git"))
    except subprocess.CalledProcessError as exc:
        why = (exc.stderr or "").strip().splitlines()[-1:] or ["git failed"]
        return RepoStatus(
            path, None, None, (), (), Problem("not-a-repo", f"{path} is not a usable git work tree: {why[0]}")
        )
    modified: list[str] = []
    untracked: list[str] = []
    for line in porcelain.splitlines():
        (untracked if line.startswith("??") else modified).append(line[3:])
    return RepoStatus(path, head, branch, tuple(modified), tuple(untracked), None)


def _git(path: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()
