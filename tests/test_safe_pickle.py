"""The restricted unpickler: TAP-Vid-shaped pickles load under every protocol; a pickle naming any
global beyond numpy array reconstruction is refused with a clear error before anything runs."""
from __future__ import annotations

import os
import pickle
import pickletools
import subprocess
import sys

import numpy as np
import pytest

from bench.errors import DatasetError
from bench.data.safe_pickle import ALLOWED, UnsafePickleError, safe_load, safe_loads


def tapvid_like() -> dict:
    return {"bear": {"video": np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3),
                     "points": np.random.default_rng(0).random((3, 2, 2)).astype(np.float32),
                     "occluded": np.array([[True, False]] * 3), "scale": np.float64(0.5),
                     "jpegs": [b"\xff\xd8jpeg", np.array([b"ab", b"c"], dtype=object)]}}


class Payload:
    """Unpickling calls ``func(*args)``: the classic code-execution gadget."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_arrays_load_under_every_protocol(tmp_path, protocol):
    data = tapvid_like()
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    out = safe_load(path)["bear"]
    for key in ("video", "points", "occluded"):
        np.testing.assert_array_equal(out[key], data["bear"][key])
        assert out[key].dtype == data["bear"][key].dtype
    assert out["scale"] == 0.5 and out["jpegs"][0] == b"\xff\xd8jpeg" and out["jpegs"][1].tolist() == [b"ab", b"c"]


def test_allow_list_is_numpy_reconstruction_only():
    modules = {module for module, _ in ALLOWED}
    assert modules == {"numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                       "numpy._core.numeric", "_codecs"}
    assert {name for _, name in ALLOWED} == {"ndarray", "dtype", "_reconstruct", "scalar", "_frombuffer", "encode"}


@pytest.mark.parametrize("make_payload,named", [
    (lambda marker: Payload(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
    (lambda marker: Payload(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
    (lambda marker: Payload(exec, f"open({str(marker)!r}, 'w')"), "builtins.exec"),
    (lambda marker: Payload(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
    (lambda marker: Payload(np.save, str(marker), np.zeros(1)), "numpy.save"),
])
def test_malicious_pickles_are_refused_and_never_run(tmp_path, make_payload, named):
    marker = tmp_path / "pwned"
    evil = tapvid_like()
    evil["bear"]["points"] = make_payload(marker)  # hidden inside an otherwise valid file
    path = tmp_path / "tapvid_davis.pkl"
    path.write_bytes(pickle.dumps(evil))
    with pytest.raises(UnsafePickleError) as e:
        safe_load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: refusing to unpickle") and named in msg and "\n" not in msg
    assert not marker.exists() and not (tmp_path / "pwned.npy").exists()
    assert isinstance(e.value, DatasetError) and isinstance(e.value, ValueError)


def test_handwritten_os_system_opcodes_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()  # protocol 0: GLOBAL os.system, REDUCE
    with pytest.raises(UnsafePickleError, match=r"references os\.system"):
        safe_loads(payload, "evil.pkl")
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match=r"references builtins\.getattr"):
        safe_loads(b"cbuiltins\ngetattr\n(cnumpy\nndarray\nS'__class__'\ntR.", "evil.pkl")


def test_latin1_codec_only(tmp_path):
    assert safe_loads(b"c_codecs\nencode\n(X\x02\x00\x00\x00\xc3\xa9X\x06\x00\x00\x00latin1tR.") == b"\xe9"
    with pytest.raises(DatasetError, match="not a bytes literal"):
        safe_loads(b"c_codecs\nencode\n(X\x01\x00\x00\x00aX\x06\x00\x00\x00rot_13tR.", "x.pkl")


def test_persistent_ids_are_refused():
    payload = b"(Pfoo\n."  # PERSID
    with pytest.raises(UnsafePickleError, match="persistent ids"):
        safe_loads(payload, "x.pkl")


def test_truncated_empty_and_garbage_files(tmp_path):
    path = tmp_path / "t.pkl"
    path.write_bytes(pickle.dumps(tapvid_like())[:200])
    with pytest.raises(DatasetError, match=rf"^{path}: corrupt or truncated pickle"):
        safe_load(path)
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match=rf"^{path}: pickle is empty \(0 bytes\)"):
        safe_load(path)
    path.write_bytes(b"\x00\x01garbage")
    with pytest.raises(DatasetError, match=rf"^{path}: "):
        safe_load(path)
    with pytest.raises(DatasetError, match="not found"):
        safe_load(tmp_path / "missing.pkl")


def test_tapvid_adapter_refuses_a_malicious_pickle(tmp_path):
    from bench.data.tapvid import TapVid

    marker = tmp_path / "pwned"
    (tmp_path / "tapvid_davis").mkdir()
    path = tmp_path / "tapvid_davis" / "tapvid_davis.pkl"
    evil = tapvid_like()
    evil["bear"]["video"] = Payload(os.system, f"touch {marker}")
    path.write_bytes(pickle.dumps(evil))
    with pytest.raises(UnsafePickleError) as e:
        TapVid(split="test", root=tmp_path / "cache", data_dir=tmp_path, num_frames=2, resolution=8)
    assert str(e.value).startswith(f"{path}: refusing to unpickle") and not marker.exists()


def test_refusal_happens_before_any_import():
    """find_class must not import the module a file names (importing can run code)."""
    assert "tabnanny" not in sys.modules
    with pytest.raises(UnsafePickleError, match=r"references tabnanny\.check"):
        safe_loads(b"ctabnanny\ncheck\n.", "x.pkl")
    assert "tabnanny" not in sys.modules
    with pytest.raises(UnsafePickleError, match="no_such_module"):  # not ModuleNotFoundError
        safe_loads(b"cno_such_module\nf\n.", "x.pkl")


def test_pickletools_sees_only_allowed_globals_in_a_tapvid_file():
    globals_used = set()
    for op, arg, _ in pickletools.genops(pickle.dumps(tapvid_like(), protocol=2)):
        if op.name == "GLOBAL":
            globals_used.add(tuple(arg.split(" ")))
    assert globals_used <= set(ALLOWED)
