"""The source tree of a reference repository for the run-once fixture scripts (make_*_reference.py): a checkout
or a bare git directory (``fetch``'s mirrors), whose HEAD is extracted to a temporary directory."""

from __future__ import annotations

import contextlib
import io
import subprocess
import tarfile
from pathlib import Path


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, check=True)


def package_source(path: Path, tmp: Path, package: str, repository: str) -> tuple[Path, str]:
    """(directory holding ``package``, its commit or 'unknown'): ``path`` is a directory holding ``package/`` or a
    bare git directory of ``repository``, whose HEAD is extracted under ``tmp``."""
    if (path / package / "__init__.py").is_file():
        commit = "unknown"
        if (path / ".git").exists():  # its own checkout, not a copy inside another repository
            with contextlib.suppress(OSError, subprocess.CalledProcessError):
                commit = git("-C", str(path), "rev-parse", "HEAD").stdout.decode().strip()
        return path, commit
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        commit = git("--git-dir", str(path), "rev-parse", "HEAD").stdout.decode().strip()
        out = tmp / f"{package}-src"
        with tarfile.open(fileobj=io.BytesIO(git("--git-dir", str(path), "archive", "HEAD").stdout)) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(out, filter="data")
            else:  # Python without extraction filters; the archive is git's own output
                tar.extractall(out)
        return out, commit
    raise SystemExit(f"{path}: neither a directory holding {package}/ nor a bare git directory of {repository}")
