"""What an artifact's bytes must be, with no store in sight: the ids, a dataset's JSONL lines,
a model directory's tar archive (packed, checked and unpacked safely) and digests. The spec
schema, the CLI and the SDK check with it before anything is sent; the gateway checks an upload
with it before storing; artifacts.py (the store, over NATS) uses it on the trainers.

A model directory travels as an uncompressed tar of regular files with `config.json` at its top:
one object and one digest, and `check_model_archive` refuses anything else (links, absolute or
`..` names, devices) before it is stored or unpacked.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import tarfile
from pathlib import Path, PurePosixPath

DATASET_PREFIX = "ds-"
MODEL_PREFIX = "m-"
ARTIFACT_ID = re.compile(r"^(ds|m)-[0-9a-f]{16}$")
# Members of a model archive, and their total unpacked size, are bounded too.
MAX_ARCHIVE_MEMBERS = 10_000


class ArtifactError(Exception):
    """An artifact that cannot be stored or used as asked; the message says why."""


def new_artifact_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(8)}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_jsonl(path: Path) -> None:
    """Every non-empty line a JSON object in UTF-8; ArtifactError naming the first bad line."""
    import json

    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as err:
                raise ArtifactError(f"dataset line {number}: not JSON ({err})") from None
            if not isinstance(row, dict):
                raise ArtifactError(f"dataset line {number}: not a JSON object")


def safe_relative_path(name: str) -> str:
    """`name` as a safe relative path (a tar member's, a model file's), or ArtifactError naming it."""
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or any(part in ("..", "") for part in path.parts):
        raise ArtifactError(f"archive member {name!r}: must be a relative path without '..'")
    return str(path)


def check_model_archive(path: Path, max_unpacked_bytes: int) -> list[str]:
    """The member names of a model archive, or ArtifactError saying what is wrong with it: not a
    tar, a member that is not a regular file or a directory, an unsafe name, too many members,
    too large unpacked, or no config.json at the top."""
    try:
        with tarfile.open(path, "r:") as archive:
            names, total = [], 0
            for count, member in enumerate(archive, start=1):
                if count > MAX_ARCHIVE_MEMBERS:
                    raise ArtifactError(f"archive: more than {MAX_ARCHIVE_MEMBERS} members")
                name = safe_relative_path(member.name)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise ArtifactError(f"archive member {name!r}: only regular files and directories are accepted")
                total += member.size
                if total > max_unpacked_bytes:
                    raise ArtifactError(f"archive: unpacks to more than {max_unpacked_bytes} bytes")
                names.append(name)
    except tarfile.TarError as err:
        raise ArtifactError(f"not an uncompressed tar archive: {err}") from None
    if "config.json" not in names:
        raise ArtifactError("archive: no config.json at its top (a Hugging Face model directory)")
    return names


def unpack_model_archive(path: Path, target: Path, max_unpacked_bytes: int) -> Path:
    """Unpack a checked model archive into `target` (through a temporary folder renamed when whole)."""
    check_model_archive(path, max_unpacked_bytes)
    staging = target.with_name(f".{target.name}.part-{secrets.token_hex(4)}")
    try:
        with tarfile.open(path, "r:") as archive:
            archive.extractall(staging, filter="data")
        if target.exists():
            shutil.rmtree(staging)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def pack_model_dir(directory: Path, target: Path) -> Path:
    """A model directory as the archive UploadArtifact takes (regular files only, relative names)."""
    with tarfile.open(target, "w:", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink()):
            archive.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
    return target
