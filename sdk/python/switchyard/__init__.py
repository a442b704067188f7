"""switchyard rank SDK: what a training process uses to talk to its supervisor.

Zero dependencies (stdlib only, Python 3.9+). Every function is safe to call when the script
runs outside switchyard: without SWITCHYARD_REPORT the report functions do nothing, and
`checkpoint()` falls back to ./checkpoints. The contract is documented in docs/rank-contract.md.

    import switchyard
    start = 0
    if switchyard.resume_path():
        start = switchyard.load_manifest(switchyard.resume_path()) + 1
    for step in range(start, steps):
        loss = train_one_step()
        switchyard.step(step, loss=loss, tokens=n_tokens)
        if switchyard.is_main() and step % 100 == 0:
            with switchyard.checkpoint(step) as d:
                torch.save(state, os.path.join(d, "state.pt"))
    switchyard.done(step)
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "step",
    "done",
    "report",
    "checkpoint",
    "resume_path",
    "load_manifest",
    "read_manifest",
    "verify_checkpoint",
    "checkpoint_dir_name",
    "rank",
    "local_rank",
    "world_size",
    "attempt",
    "is_main",
]

MANIFEST_FORMAT = "switchyard-checkpoint/1"
MANIFEST_NAME = "MANIFEST.json"

# Fields every report line carries; `**extra` passed by the user may not overwrite them.
_RESERVED = ("t", "kind", "rank", "attempt")

_lock = threading.Lock()
_fd: Optional[int] = None
_fd_pid: Optional[int] = None
_fd_path: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# Environment of the rank contract
# ---------------------------------------------------------------------------------------------


def _env_int(name: str, default: Optional[int]) -> Optional[int]:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        return default


def rank() -> int:
    """Global rank (RANK), 0 when unset."""
    return _env_int("RANK", 0) or 0


def local_rank() -> int:
    """Rank within this node (LOCAL_RANK), 0 when unset."""
    return _env_int("LOCAL_RANK", 0) or 0


def world_size() -> int:
    """Number of ranks in the gang (WORLD_SIZE), 1 when unset."""
    return _env_int("WORLD_SIZE", 1) or 1


def attempt() -> Optional[int]:
    """Attempt number of this launch (SWITCHYARD_ATTEMPT, 1-based), None outside switchyard."""
    return _env_int("SWITCHYARD_ATTEMPT", None)


def is_main() -> bool:
    """True on global rank 0, the rank that should write checkpoints and logs of record."""
    return rank() == 0


def resume_path() -> Optional[str]:
    """The verified checkpoint directory to resume from (SWITCHYARD_RESUME_FROM), None for a fresh start."""
    value = os.environ.get("SWITCHYARD_RESUME_FROM", "").strip()
    return value or None


# ---------------------------------------------------------------------------------------------
# Progress reports: JSON lines appended to SWITCHYARD_REPORT
# ---------------------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """Make a value JSON-encodable without bare NaN/Infinity (JavaScript's JSON.parse rejects them)."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return _json_safe(item())
        except Exception:
            pass
    return str(value)


def _report_fd() -> Optional[int]:
    """The report file, opened O_APPEND once per process (reopened after fork or a changed path)."""
    global _fd, _fd_pid, _fd_path
    path = os.environ.get("SWITCHYARD_REPORT", "").strip()
    if not path:
        return None
    pid = os.getpid()
    if _fd is not None and _fd_pid == pid and _fd_path == path:
        return _fd
    if _fd is not None and _fd_pid == pid:
        with contextlib.suppress(OSError):
            os.close(_fd)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _fd_pid, _fd_path = pid, path
    return _fd


def report(kind: str, **fields: Any) -> None:
    """Append one report line of the given kind. No-op without SWITCHYARD_REPORT.

    The line is written with a single write() on an O_APPEND descriptor: no user-space buffer,
    so it is in the file as soon as this returns, even if the process is killed right after.
    """
    line: Dict[str, Any] = {"t": time.time(), "kind": kind, "rank": rank(), "attempt": attempt()}
    line.update((k, v) for k, v in fields.items() if k not in _RESERVED)
    data = (json.dumps(_json_safe(line), allow_nan=False, separators=(",", ":")) + "\n").encode()
    with _lock:
        fd = _report_fd()
        if fd is None:
            return
        written = os.write(fd, data)
        while written < len(data):  # only on exotic filesystems; regular files take it in one go
            written += os.write(fd, data[written:])


def step(
    step: int,
    loss: Optional[float] = None,
    tokens: Optional[int] = None,
    compute_s: Optional[float] = None,
    **extra: Any,
) -> None:
    """Report that training step `step` finished. Fields left as None are omitted from the line."""
    fields: Dict[str, Any] = {"step": int(step)}
    if loss is not None:
        fields["loss"] = float("nan") if _chaos_nan() else float(loss)
    if tokens is not None:
        fields["tokens"] = int(tokens)
    if compute_s is not None:
        fields["compute_s"] = float(compute_s)
    fields.update((k, v) for k, v in extra.items() if k not in fields)
    report("step", **fields)


def _chaos_nan() -> bool:
    """`switchyard chaos <job> nan` drops a marker beside this rank's report file: report NaN losses from then on.

    It rehearses the supervisor's NaN rollback without touching the model; a new attempt has a new folder, so the
    marker does not follow the job across the rollback.
    """
    path = os.environ.get("SWITCHYARD_REPORT")
    if not path:
        return False
    return os.path.exists(os.path.join(os.path.dirname(path), "chaos-nan-rank-%s" % os.environ.get("RANK", "0")))


def done(step: int, **extra: Any) -> None:
    """Report that training finished at `step` (the last step completed)."""
    report("done", step=int(step), **{k: v for k, v in extra.items() if k != "step"})


# ---------------------------------------------------------------------------------------------
# Checkpoints: temp dir -> fsync -> MANIFEST.json last -> atomic rename
# ---------------------------------------------------------------------------------------------


def checkpoint_dir_name(step: int) -> str:
    """Name of the directory of a finished checkpoint: step-00000042."""
    return "step-%08d" % int(step)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms that cannot open a directory (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sync_and_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest_files(root: str) -> List[Dict[str, Any]]:
    files: List[Dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if rel == MANIFEST_NAME:
                continue
            files.append({"path": rel, "size": os.path.getsize(full), "sha256": _sync_and_hash(full)})
        if dirpath != root:
            _fsync_dir(dirpath)
    files.sort(key=lambda f: f["path"])
    return files


def _checkpoint_root(root: Optional[str]) -> str:
    return root or os.environ.get("SWITCHYARD_CHECKPOINT_DIR", "").strip() or "checkpoints"


@contextlib.contextmanager
def checkpoint(step: int, shards: int = 1, root: Optional[str] = None) -> Iterator[str]:
    """Write a checkpoint atomically. Yields a fresh temp directory to write files into.

    On normal exit the files are fsynced and hashed, MANIFEST.json is written last, and the
    directory is renamed to <root>/step-<step:08d>. On an exception the temp directory is
    removed and the exception propagates. A crash mid-write leaves only a `.tmp-*` directory,
    which never counts as a checkpoint.
    """
    started = time.monotonic()
    root = os.path.abspath(_checkpoint_root(root))
    os.makedirs(root, exist_ok=True)
    pid = os.getpid()
    tmp = os.path.join(root, ".tmp-%s-%d" % (checkpoint_dir_name(step), pid))
    final = os.path.join(root, checkpoint_dir_name(step))
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    try:
        yield tmp
        files = _manifest_files(tmp)
        if not files:
            raise ValueError(
                "switchyard.checkpoint(%d): nothing was written into %s; write the state files into the "
                "yielded directory (an empty checkpoint cannot be resumed from)" % (step, tmp)
            )
        manifest = {
            "format": MANIFEST_FORMAT,
            "step": int(step),
            "shards": int(shards),
            "created": time.time(),
            "files": files,
        }
        manifest_path = os.path.join(tmp, MANIFEST_NAME)
        with open(manifest_path, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        _install(tmp, final, pid)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report(
        "checkpoint",
        step=int(step),
        path=final,
        save_s=time.monotonic() - started,
        bytes=sum(f["size"] for f in files),
    )


def _install(tmp: str, final: str, pid: int) -> None:
    """Rename tmp to final; an existing final (a re-run of the same step) is moved aside first."""
    root = os.path.dirname(final)
    aside = None
    if os.path.exists(final):
        aside = os.path.join(root, ".old-%s-%d" % (os.path.basename(final), pid))
        if os.path.exists(aside):
            shutil.rmtree(aside)
        os.rename(final, aside)
    os.rename(tmp, final)
    _fsync_dir(root)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def read_manifest(path: str) -> Dict[str, Any]:
    """The parsed MANIFEST.json of a checkpoint directory."""
    with open(os.path.join(path, MANIFEST_NAME), encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(
            "%s: unknown checkpoint format %r (expected %r)"
            % (os.path.join(path, MANIFEST_NAME), manifest.get("format"), MANIFEST_FORMAT)
        )
    return manifest


def load_manifest(path: str) -> int:
    """The step a checkpoint directory was taken at (from its MANIFEST.json)."""
    return int(read_manifest(path)["step"])


def verify_checkpoint(path: str) -> List[str]:
    """Problems found in a checkpoint directory (sizes and SHA-256 against its manifest); [] when it verifies."""
    try:
        manifest = read_manifest(path)
    except (OSError, ValueError) as exc:
        return ["%s: manifest unreadable: %s" % (path, exc)]
    problems = []
    for entry in manifest.get("files", []):
        full = os.path.join(path, *entry["path"].split("/"))
        if not os.path.isfile(full):
            problems.append("%s: missing" % entry["path"])
            continue
        size = os.path.getsize(full)
        if size != entry["size"]:
            problems.append("%s: size %d, manifest says %d" % (entry["path"], size, entry["size"]))
            continue
        digest = hashlib.sha256()
        with open(full, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != entry["sha256"]:
            problems.append("%s: sha256 mismatch" % entry["path"])
    return problems


# ---------------------------------------------------------------------------------------------
# On import: stack dumps on SIGUSR1, and the start line
# ---------------------------------------------------------------------------------------------


def _install_stack_dump() -> None:
    # The supervisor sends SIGUSR1 to a hung rank to get its Python stacks before killing it.
    if not hasattr(signal, "SIGUSR1"):
        return
    try:
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    except (AttributeError, ValueError, OSError, RuntimeError):
        pass  # no usable stderr (e.g. a captured one without a file descriptor)


_install_stack_dump()
try:
    report("start", pid=os.getpid())
except OSError as _exc:
    print("switchyard: cannot write report file %s: %s" % (os.environ.get("SWITCHYARD_REPORT"), _exc), file=sys.stderr)
