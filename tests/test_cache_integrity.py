"""Cache entries are never served damaged, and a full disk is a one-line error that leaves nothing.

Every cache built on ``bench.staging.cached_entry`` is tried: the feature cache
(``cache/features/<key>/{features.npy, meta.json}``), the world cache
(``cache/world/<fingerprint>/{<key>.npy, manifest.json}``) and the dataset adapters' cache
(``cache/adapters/<name>/<fingerprint>/{<key>.npy, complete.json}``), damaged in a numeric array
(Kinetics' decoded videos) and in an array of JSON-encoded objects (video_boxes' RLE masks).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import bench.features as bf
from bench import staging
from bench.data.video_io import AdapterDataset
from bench.errors import DatasetError
from bench.data.world_cache import load_or_build
from bench.features import FeatureError, cached_features
from bench.staging import CacheWarning
from tests.test_adapters import build, make_kinetics, make_video_boxes
from tests.test_reliability import TINY_DATA, bench_args, error_line, run_here

REPO = Path(__file__).resolve().parents[1]
NO_SPACE = "cannot write the cache entry (No space left on device); nothing was kept"


@dataclass
class Cache:
    """One cache under test: ``load()`` returns copies of its arrays; ``builds`` counts the misses."""

    entry: Path
    array: str
    meta: str
    load: Callable[[], dict[str, np.ndarray]]
    builds: list[int] = field(default_factory=list)


def render(i: int) -> dict[str, np.ndarray]:
    """A cheap stand-in for the world's renderer: three keys of different dtypes and shapes."""
    rng = np.random.default_rng(i)
    return {"video": rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8),
            "depth": rng.random((2, 4, 4), dtype=np.float32), "label": i % 3}


# adapter: (dataset, fixture writer, array damaged, options giving 6 clips)
ADAPTERS = {
    "adapter": ("kinetics", make_kinetics, "video.npy", dict(frame_stride=2, clips_per_video=2)),
    "adapter masks": ("video_boxes", make_video_boxes, "masks.npy", dict(frame_stride=1, clips_per_video=3)),
}


def adapter_cache(param: str, tmp_path: Path, monkeypatch) -> Cache:
    """An adapter's split, opened afresh by each ``load()`` as a new run would; a build is a decoded clip."""
    name, make, array, options = ADAPTERS[param]
    data = make(tmp_path / name)

    def load() -> dict[str, np.ndarray]:
        ds = build(name, data, tmp_path, **options)
        return {k: np.array(v) for k, v in ds.arrays(ds.provides).items()}

    entry = tmp_path / "cache" / "adapters" / name / build(name, data, tmp_path, **options).fingerprint
    made = Cache(entry, array, "complete.json", load)
    real_load_clip = AdapterDataset.load_clip
    monkeypatch.setattr(AdapterDataset, "load_clip", lambda ds, i: made.builds.append(i) or real_load_clip(ds, i))
    return made


@pytest.fixture(params=["features", "world", *ADAPTERS])
def cache(request, tmp_path, monkeypatch) -> Cache:
    if request.param in ADAPTERS:
        return adapter_cache(request.param, tmp_path, monkeypatch)
    if request.param == "features":
        model, clips = request.getfixturevalue("tiny_vit"), request.getfixturevalue("tiny_clips")
        key = bf.cache_key("sha", clips.fingerprint, model, {})
        made = Cache(tmp_path / "features" / key, "features.npy", "meta.json",
                     lambda: {"features": np.array(cached_features(model, "sha", clips, tmp_path))})
        real_extract = bf.extract
        monkeypatch.setattr(bf, "extract", lambda *a, **k: made.builds.append(1) or real_extract(*a, **k))
        return made

    def counted(i: int) -> dict[str, np.ndarray]:
        made.builds.append(i)
        return render(i)

    made = Cache(tmp_path / "world" / "split", "video.npy", "manifest.json",
                 lambda: {k: np.array(v) for k, v in load_or_build(made.entry, counted, 6).items()})
    return made


def later_run(monkeypatch) -> None:
    """What a new process knows: no file's sha256 checked yet."""
    monkeypatch.setattr(staging, "_VERIFIED", set())


def records(path: Path) -> dict:
    return json.loads(path.read_text())["arrays"]


def resave_consistently(entry: Path, array: str, meta: str) -> None:
    """One clip fewer, with a metadata record that matches: an entry copied from another split."""
    a = np.load(entry / array)[:-1]
    np.save(entry / array, a)
    m = json.loads((entry / meta).read_text())
    data = (entry / array).read_bytes()
    m["arrays"][array] = {"shape": list(a.shape), "dtype": a.dtype.str, "bytes": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()}
    (entry / meta).write_text(json.dumps(m))


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# name: (damage(entry, array, meta), what the warning says after "<path of the damaged file>: ")
DAMAGE = {
    "empty file": (lambda e, a, m: (e / a).write_bytes(b""),
                   r"0 bytes, the metadata records \d+ \(empty, truncated or overwritten\)"),
    "truncated file": (lambda e, a, m: (e / a).write_bytes((e / a).read_bytes()[:-7]),
                       r"\d+ bytes, the metadata records \d+ \(empty, truncated or overwritten\)"),
    "wrong shape header": (lambda e, a, m: np.save(e / a, np.load(e / a).reshape(-1, 3)),
                           r"the \.npy header says shape \(\d+, 3\) dtype \S+, the metadata records shape \(6, "),
    "unreadable header": (lambda e, a, m: (e / a).write_bytes(b"garbage!" + (e / a).read_bytes()[8:]),
                          r"unreadable \.npy header \(the magic string is not correct"),
    "flipped byte": (lambda e, a, m: flip_last_byte(e / a),
                     r"sha256 [0-9a-f]{12}… does not match the metadata \([0-9a-f]{12}…\): the bytes changed"),
    "array missing": (lambda e, a, m: (e / a).unlink(), r"missing"),
    "wrong number of clips": (resave_consistently, r"the metadata records shape \(5, .*\), expected 6 rows"),
    "meta missing": (lambda e, a, m: (e / m).unlink(), r"missing"),
    "meta truncated": (lambda e, a, m: (e / m).write_text((e / m).read_text()[:-9]),
                       r"unreadable metadata \(JSONDecodeError: "),
    "meta of an older frozen4d": (lambda e, a, m: (e / m).write_text(json.dumps({"key": "k", "clips": 6})),
                                  r"records no arrays \(damaged, or written by an older frozen4d\)"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_entry_is_named_removed_and_rebuilt(cache, damage, monkeypatch):
    fresh = cache.load()
    assert cache.builds and (cache.entry / cache.meta).exists()
    cache.builds.clear()
    size = (cache.entry / cache.array).stat().st_size
    corrupt, says = DAMAGE[damage]
    corrupt(cache.entry, cache.array, cache.meta)
    if damage in ("wrong shape header", "unreadable header", "flipped byte"):
        assert (cache.entry / cache.array).stat().st_size == size  # only the header/checksum check can see it
    later_run(monkeypatch)
    damaged = cache.entry / (cache.meta if damage.startswith("meta") else cache.array)
    with pytest.warns(CacheWarning) as caught:
        rebuilt = cache.load()
    [warning] = [str(w.message) for w in caught]
    assert re.fullmatch(re.escape(f"{damaged}: ") + says + r".*; removed the cache entry, rebuilding it", warning)
    assert "\n" not in warning
    assert cache.builds  # recomputed, never served
    assert rebuilt.keys() == fresh.keys()
    for k in fresh:
        np.testing.assert_array_equal(rebuilt[k], fresh[k])  # the same bytes as a fresh run
    assert [p.name for p in cache.entry.parent.iterdir()] == [cache.entry.name]  # no temp, no removed copy left
    cache.builds.clear()
    assert cache.load().keys() == fresh.keys() and not cache.builds  # the rebuilt entry is a hit


def test_metadata_records_every_array(cache):
    cache.load()
    for name, record in records(cache.entry / cache.meta).items():
        path = cache.entry / name
        assert record == {"shape": list(np.load(path, mmap_mode="r").shape),
                          "dtype": np.load(path, mmap_mode="r").dtype.str, "bytes": path.stat().st_size,
                          "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_a_file_changed_within_the_process_is_hashed_again(cache):
    fresh = cache.load()
    cache.builds.clear()
    path = cache.entry / cache.array
    stat = path.stat()
    flip_last_byte(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # a new mtime, even on a coarse clock
    with pytest.warns(CacheWarning, match="does not match the metadata"):
        rebuilt = cache.load()
    assert cache.builds and all(np.array_equal(rebuilt[k], fresh[k]) for k in fresh)


def test_the_bytes_are_hashed_once_per_process(cache, monkeypatch):
    """Writing hashes the bytes on their way out; an open re-hashes only in a new process (or
    after the file changed), so a hit within one process reads no more than before."""
    hashed = []
    real = staging.sha256_stream
    monkeypatch.setattr(staging, "sha256_stream", lambda f: hashed.append(f.name) or real(f))
    cache.load()
    cache.load()
    assert hashed == []
    later_run(monkeypatch)
    cache.load()
    cache.load()
    assert sorted(hashed) == sorted(str(cache.entry / name) for name in records(cache.entry / cache.meta))


RACE = """
import sys, time
sys.path.insert(0, {repo!r})
import numpy as np
from bench.staging import cached_entry

def build(entry):
    rows = entry.array("rows.npy", (20, 3), np.int64)
    for i in range(20):
        time.sleep(0.01)
        rows[i] = np.arange(3) + i
    return {{}}

print(cached_entry(sys.argv[1], "meta.json", 20, build, RuntimeError)[1]["rows.npy"].sum())
"""


def test_two_writers_race_and_both_serve_one_verified_entry(tmp_path):
    """Both miss and build; the first rename wins and the loser checks and serves the winner's copy."""
    script = tmp_path / "race.py"
    script.write_text(RACE.format(repo=str(REPO)))
    entry = tmp_path / "cache" / "entry"
    procs = [subprocess.Popen([sys.executable, str(script), str(entry)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and [o for o, _ in outputs] == ["630\n", "630\n"]
    assert all("CacheWarning" not in err for _, err in outputs)
    assert [p.name for p in entry.parent.iterdir()] == ["entry"]


# ---------------------------------------------------------------------------------------------
# a full disk

def no_space(*args) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fills_up_later(fd: int, offset: int, length: int) -> None:
    """The reservation succeeds, then every write fails: a disk filled by someone else, or a file
    system that cannot reserve (the file now writes to /dev/full)."""
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, fd)
    os.close(full)


@pytest.mark.parametrize("disk", [no_space, fills_up_later], ids=["reservation fails", "fills up while writing"])
def test_a_full_disk_is_one_error_naming_the_entry_and_leaves_nothing(cache, disk, monkeypatch):
    if disk is fills_up_later and not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    monkeypatch.setattr(os, "posix_fallocate", disk, raising=False)
    error = FeatureError if cache.array == "features.npy" else DatasetError
    with pytest.raises(error) as caught:
        cache.load()
    assert str(caught.value) == f"{cache.entry}: {NO_SPACE}"
    assert list(cache.entry.parent.iterdir()) == []  # no temp directory, no entry
    if disk is no_space and error is FeatureError:
        assert cache.builds == []  # refused before any extraction
    monkeypatch.undo()
    assert cache.load() and (cache.entry / cache.meta).exists()  # space again: the next run builds it


def test_a_write_error_of_another_cache_is_not_blamed_on_this_one(tmp_path, monkeypatch):
    """A nested cache that fails (a dataset's, decoded while features are built) keeps its own path."""
    def build(entry):
        with staging.staged_directory(tmp_path / "adapters" / "x", marker="done") as tmp:
            (tmp / "done").write_text("x")
        return {}

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(staging.WriteError) as caught:
        staging.cached_entry(tmp_path / "features" / "k", "meta.json", 1, build, FeatureError)
    assert caught.value.filename == str(tmp_path / "adapters" / "x") and not isinstance(caught.value, FeatureError)
    assert list((tmp_path / "features").iterdir()) == [] and list((tmp_path / "adapters").iterdir()) == []


FILL = """
import sys
sys.path.insert(0, {repo!r})
import errno, os
import numpy as np
if {unsupported}:  # a file system that cannot reserve blocks: the buffered writes hit ENOSPC instead
    def unsupported(*a):
        raise OSError(errno.EOPNOTSUPP, "not supported")
    os.posix_fallocate = unsupported
from bench.errors import UserError
from bench.staging import cached_entry

def build(entry):
    video = entry.array("video.npy", (64, 64, 64, 3), np.uint8)
    for i in range(64):
        video[i] = i
    return {{}}

try:
    cached_entry(sys.argv[1] + "/world/split", "manifest.json", 64, build, UserError)
except UserError as exc:
    print("left:", os.listdir(sys.argv[1] + "/world"), flush=True)
    print(f"error: {{exc}}", file=sys.stderr)
    sys.exit(2)
"""


def tiny_filesystem_available() -> bool:
    probe = ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"]
    return shutil.which("unshare") is not None and subprocess.run(probe, capture_output=True).returncode == 0


@pytest.mark.skipif(not tiny_filesystem_available(), reason="needs user namespaces to mount a small tmpfs")
@pytest.mark.parametrize("unsupported", [False, True], ids=["reserved", "cannot reserve"])
def test_a_real_full_filesystem(tmp_path, unsupported):
    """A 64 KiB tmpfs and a 768 KiB array: with sparse memory maps the writer died of SIGBUS, silent,
    and left its temp directory behind."""
    script = tmp_path / "fill.py"
    script.write_text(FILL.format(repo=str(REPO), unsupported=unsupported))
    mount = tmp_path / "disk"
    mount.mkdir()
    shell = f"mount -t tmpfs -o size=64k tmpfs {mount} && exec {sys.executable} {script} {mount}"
    run = subprocess.run(["unshare", "-rm", "sh", "-c", shell], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines()[-1] == f"error: {mount}/world/split: {NO_SPACE}"
    assert run.stdout == "left: []\n"


def test_a_full_disk_while_decoding_a_dataset_is_exit_2_through_the_cli(tmp_path, monkeypatch):
    """The first cache a run writes is the dataset's decoded clips: one error line naming that entry."""
    data = make_kinetics(tmp_path / "kinetics")
    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    cache = tmp_path / "cache"
    args = bench_args(cache, tmp_path / "results", tmp_path / "out", "task=action", "data=kinetics",
                      f"data.data_dir={data}", *TINY_DATA)
    line = error_line(*run_here(*args))
    assert re.fullmatch(re.escape(f"error: {cache / 'adapters' / 'kinetics'}/") + "[0-9a-f]{64}: "
                        + re.escape(NO_SPACE), line), line
    left = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*"))
    assert left == ["adapters", "adapters/kinetics"]  # no entry, no temp directory, nothing else written
    assert not (tmp_path / "results").exists()
