"""Crash safety and determinism of the real `nibble` binary (NIBBLE_BIN).

SIGKILL in the middle of a large write (8 x [4096, 4096] F16 = 256 MiB, as
safetensors -> compressed-tensors directory and as GGUF -> GGUF; the run is
made slow with --isa scalar --threads 1 and killed once its temporary exists
and has grown past GROWN bytes, polled every 5 ms):
  - nothing exists under the final name (or, with --force over an existing
    output, the old output is still there byte for byte);
  - the one thing left behind is nibble's temporary: SIGKILL cannot be caught,
    so the hidden `.OUT.nibble-tmp-PID-<16 hex digits>` directory
    (safetensors output) or file (GGUF output) of the killed
    process stays next to OUT, holding a partial, unusable output. It is never
    read back, and no final name ever points at it;
  - the next run (with the leftover still there) exits 0 and writes exactly the
    bytes of an uninterrupted run (sha256 of every output file); the leftover
    is either removed or left exactly as it was (nibble does not clean up the
    temporaries of dead processes today: the tests assert only that it is not
    touched or reused, and print what they found).
  - PID reuse: a stale temporary whose name carries the PID of the new run (a
    container that starts nibble with the same PID after an OOM kill does
    this) must not stop the run either.
Disk full while writing GGUF (a 64 KiB and a 1 MiB tmpfs when mount(2) works,
and RLIMIT_FSIZE with SIGXFSZ ignored, so write() fails with EFBIG): exit 3,
one error line naming the file and the system's reason, nothing under the
final name, no temporaries, the input unchanged; with --force, the old output
survives byte for byte.

Determinism: the same input converted twice, with 1, 2 and 3 threads and with
every ISA path the CPU has (`nibble info`'s "supported isas:" line; a path the
CPU lacks is skipped with a reason, and a warning lists the paths compared)
gives the same sha256 for every output file and the same --report JSON, for
safetensors int8, int4-g128 (symmetric), int4-g32-asym, an fp16 cast and a
mixed config; GGUF q8_0, q4_0, q4_1; and `nibble dequant` of the converted
directories (its path chosen by NIBBLE_ISA). The inputs are heavy-tailed with
adversarial rows: outliers, +-65504 (+-65280 in BF16), FP16 subnormals, all-zero
and constant rows, signed zeros, exact .5 ties on power-of-two scales for
int8/int4 symmetric and asymmetric grids, and FP32 values halfway between two
FP16 values (ties of the fp16 cast). F16, BF16 and F32 tensors are all present.

Skipped without NIBBLE_BIN."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import struct
import subprocess
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import pytest

NIBBLE = os.environ.get("NIBBLE_BIN", "")
pytestmark = pytest.mark.skipif(not NIBBLE or not Path(NIBBLE).is_file(),
                                reason="NIBBLE_BIN is not set to the built nibble binary")

SLOW = ["--isa", "scalar", "--threads", "1"]
GROWN = 4 << 20          # kill once the temporary output holds this many bytes
BIG_N, BIG_ROWS, BIG_COLS = 8, 4096, 4096   # 256 MiB of F16


# ---------------------------------------------------------------------------
# Running nibble.

def run(*args, env: Optional[dict] = None, preexec: Optional[Callable] = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full.pop("NIBBLE_ISA", None)
    full.update(env or {})
    return subprocess.run([NIBBLE, *map(str, args)], capture_output=True, text=True,
                          errors="replace", env=full, preexec_fn=preexec, timeout=timeout)


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stderr}"
    return r


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def hashes(root: Path) -> Dict[str, str]:
    """Relative path -> sha256 of every file under `root` (or of `root`)."""
    if root.is_file():
        return {".": sha256(root)}
    out = {}
    for p in sorted(root.rglob("*")):
        assert not p.is_symlink(), p
        if p.is_file():
            out[str(p.relative_to(root))] = sha256(p)
        else:
            out[str(p.relative_to(root)) + "/"] = "dir"
    return out


def temporaries(parent: Path) -> List[str]:
    return sorted(p.name for p in parent.iterdir()
                  if "nibble-tmp" in p.name or "nibble-old" in p.name)


def error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    errors = [l for l in lines if l.startswith("nibble: error: ")]
    assert len(errors) == 1, f"expected one error line:\n{stderr}"
    assert lines[-1] == errors[0], stderr
    assert all(l.startswith("nibble: warning: ") for l in lines[:-1]), stderr
    return errors[0]


# ---------------------------------------------------------------------------
# Big inputs, written tensor by tensor (about 1 s each).

def _big_pool() -> np.ndarray:
    pool = (np.random.default_rng(7).standard_t(4, 1 << 20) * 0.02).astype(np.float16)
    return np.resize(pool, BIG_ROWS * BIG_COLS)


def write_big_safetensors(src: Path) -> None:
    src.mkdir(parents=True)
    nbytes = BIG_ROWS * BIG_COLS * 2
    header = {f"model.layers.{i}.mlp.up_proj.weight":
              {"dtype": "F16", "shape": [BIG_ROWS, BIG_COLS],
               "data_offsets": [i * nbytes, (i + 1) * nbytes]} for i in range(BIG_N)}
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    block = _big_pool()
    with open(src / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for i in range(BIG_N):
            np.roll(block, 4099 * i).tofile(f)
    (src / "config.json").write_text('{"model_type": "llama", "torch_dtype": "float16"}\n')


def gguf_string(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def write_big_gguf(path: Path) -> None:
    kvs = gguf_string(b"general.architecture") + struct.pack("<I", 8) + gguf_string(b"llama")
    infos = b""
    nbytes = BIG_ROWS * BIG_COLS * 2
    for i in range(BIG_N):
        infos += gguf_string(f"blk.{i}.ffn_up.weight".encode()) + struct.pack("<I", 2)
        infos += struct.pack("<QQIQ", BIG_COLS, BIG_ROWS, 1, i * nbytes)   # F16
    head = b"GGUF" + struct.pack("<IQQ", 3, BIG_N, 1) + kvs + infos
    head += bytes(-len(head) % 32)
    block = _big_pool()
    with open(path, "wb") as f:
        f.write(head)
        for i in range(BIG_N):
            np.roll(block, 4099 * i).tofile(f)


KINDS = {
    # kind: (output name, scheme)
    "safetensors": ("out", "int4"),
    "gguf": ("out.gguf", "q4_0"),
}


@pytest.fixture(scope="session")
def big(tmp_path_factory):
    """{kind: (input, sha256 of every input file, hashes of an uninterrupted
    conversion)}; the files are removed at the end of the session."""
    base = tmp_path_factory.mktemp("crash-big")
    st = base / "in"
    write_big_safetensors(st)
    gg = base / "in.gguf"
    write_big_gguf(gg)
    out = {}
    for kind, src in (("safetensors", st), ("gguf", gg)):
        name, scheme = KINDS[kind]
        ref_dir = base / f"ref-{kind}"
        ref_dir.mkdir()
        ok(run("convert", src, ref_dir / name, "--scheme", scheme, "--quiet"))
        out[kind] = (src, hashes(src), hashes(ref_dir / name))
        shutil.rmtree(ref_dir)
    yield out
    shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# SIGKILL in the middle of writing.

def _temp_pattern(kind: str, name: str, pid: int) -> re.Pattern:
    # A directory (safetensors output) or a file (GGUF output), both named
    # .NAME.nibble-tmp-PID-<16 hex digits>.
    return re.compile(re.escape(f".{name}.nibble-tmp-{pid}-") + "[0-9a-f]{16}$")


def _grown(kind: str, parent: Path, name: str, pid: int) -> int:
    """Bytes written so far into the run's temporary output (0 if none)."""
    if kind == "safetensors":
        total = 0
        for d in parent.glob(f".{name}.nibble-tmp-{pid}-*"):
            try:
                total += sum(p.stat().st_size for p in d.iterdir() if p.is_file())
            except FileNotFoundError:
                pass
        return total
    total = 0
    for p in parent.glob(f".{name}.nibble-tmp-{pid}-*"):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def _kill_when_grown(proc: subprocess.Popen, kind: str, parent: Path, name: str,
                     err: Path) -> int:
    t0 = time.monotonic()
    while True:
        size = _grown(kind, parent, name, proc.pid)
        if size >= GROWN:
            break
        if proc.poll() is not None:
            pytest.fail(f"nibble exited (rc {proc.returncode}) before its temporary held "
                        f"{GROWN} bytes: the input is too small for this machine\n"
                        f"{err.read_text(errors='replace')}")
        if time.monotonic() - t0 > 120:
            pytest.fail(f"the temporary did not reach {GROWN} bytes within 120 s")
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    return size


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "force-over-existing"])
@pytest.mark.parametrize("kind", ["safetensors", "gguf"])
def test_sigkill_mid_write_then_rerun(kind, existing, big, tmp_path):
    src, src_hashes, want = big[kind]
    name, scheme = KINDS[kind]
    work = tmp_path / "work"
    work.mkdir()
    out = work / name
    old = None
    if existing:
        # A previous output that a killed --force run must leave alone.
        if kind == "safetensors":
            out.mkdir()
            (out / "model.safetensors").write_bytes(b"previous output")
            (out / "config.json").write_text("{}\n")
        else:
            out.write_bytes(b"GGUF previous output")
        old = hashes(out)
    err = tmp_path / "stderr.txt"
    args = ["convert", str(src), str(out), "--scheme", scheme, *SLOW]
    if existing:
        args.append("--force")
    with open(err, "wb") as ef:
        proc = subprocess.Popen([NIBBLE, *args], stdout=subprocess.DEVNULL, stderr=ef)
    try:
        grown = _kill_when_grown(proc, kind, work, name, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # Nothing new under the final name.
    if existing:
        assert hashes(out) == old, "a killed --force run changed the existing output"
    else:
        assert not os.path.lexists(out), f"{out} exists after SIGKILL"
    left = [p for p in sorted(work.iterdir()) if p.name != name]
    assert len(left) == 1, f"expected only the temporary, found {[p.name for p in left]}"
    stale = left[0]
    assert _temp_pattern(kind, name, proc.pid).match(stale.name), stale.name
    assert stale.is_dir() == (kind == "safetensors"), stale
    stale_hashes = hashes(stale)
    assert hashes(src) == src_hashes, "the input changed"

    # The next run is not confused by the leftover.
    args = ["convert", src, out, "--scheme", scheme, "--quiet"]
    if existing:
        args.append("--force")
    ok(run(*args))
    assert hashes(out) == want, "the rerun's output differs from an uninterrupted run"
    assert hashes(src) == src_hashes, "the input changed"
    names = sorted(p.name for p in work.iterdir())
    if stale.exists():
        assert names == sorted([name, stale.name]), names
        assert hashes(stale) == stale_hashes, "the rerun touched the dead run's temporary"
        print(f"{kind}: killed at {grown} bytes; the dead run's {stale.name} "
              f"({'directory' if stale.is_dir() else 'file'}) is still there after the "
              f"next run (stale temporaries are not cleaned up)")
    else:
        assert names == [name], names
        print(f"{kind}: killed at {grown} bytes; the next run removed {stale.name}")


def _small_safetensors(src: Path) -> None:
    src.mkdir()
    x = (np.random.default_rng(3).standard_t(4, (64, 256)) * 0.02).astype(np.float16)
    raw = x.tobytes()
    header = {"model.layers.0.mlp.up_proj.weight":
              {"dtype": "F16", "shape": [64, 256], "data_offsets": [0, len(raw)]}}
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    (src / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + raw)
    (src / "config.json").write_text('{"model_type": "llama"}\n')


def _small_gguf(path: Path) -> None:
    x = (np.random.default_rng(3).standard_t(4, (64, 256)) * 0.02).astype(np.float16)
    kvs = gguf_string(b"general.architecture") + struct.pack("<I", 8) + gguf_string(b"llama")
    infos = gguf_string(b"blk.0.ffn_up.weight") + struct.pack("<I", 2)
    infos += struct.pack("<QQIQ", 256, 64, 1, 0)
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + kvs + infos
    head += bytes(-len(head) % 32)
    path.write_bytes(head + x.tobytes())


def _stale_for_own_pid(parent: Path, name: str, kind: str) -> Callable[[], None]:
    """Runs in the child between fork and exec (the PID stays the same): leaves
    what a killed earlier run with this PID would have left."""
    def preexec():
        pid = os.getpid()
        if kind == "gguf":
            # Every random suffix cannot be planted; one is enough to show the
            # name is not reused blindly.
            (parent / f".{name}.nibble-tmp-{pid}-0123456789abcdef").write_bytes(b"partial")
            return
        d = parent / f".{name}.nibble-tmp-{pid}-0123456789abcdef"
        d.mkdir()
        (d / f".model.safetensors.nibble-tmp-{pid}-0123456789abcdef").write_bytes(b"partial")
    return preexec




@pytest.mark.parametrize("command", [
    "convert", "dequant",
    "convert-gguf"])
def test_stale_temporary_with_the_same_pid(command, tmp_path):
    kind = "gguf" if command == "convert-gguf" else "safetensors"
    work = tmp_path / "work"
    work.mkdir()
    if command == "convert-gguf":
        src = tmp_path / "in.gguf"
        _small_gguf(src)
        name, args = "out.gguf", ["convert", src, work / "out.gguf", "--scheme", "q8_0"]
    else:
        src = tmp_path / "in"
        _small_safetensors(src)
        name, args = "out", ["convert", src, work / "out", "--scheme", "int8"]
        if command == "dequant":
            ok(run("convert", src, tmp_path / "ct", "--scheme", "int8", "--quiet"))
            args = ["dequant", tmp_path / "ct", work / "out", "--dtype", "f16"]
    r = run(*args, "--quiet", preexec=_stale_for_own_pid(work, name, kind))
    assert r.returncode == 0, f"rc {r.returncode}: {r.stderr.strip()}"
    assert (work / name).exists()
    # The planted leftover is still exactly what preexec wrote (or gone).
    stale = [p for p in work.iterdir() if p.name != name]
    assert len(stale) <= 1, stale
    for p in stale:
        files = [p] if p.is_file() else list(p.iterdir())
        assert len(files) == 1 and files[0].read_bytes() == b"partial", \
            "the stale temporary was reused"


# ---------------------------------------------------------------------------
# Disk full while writing GGUF.

def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "nibble-crash-test",
                        str(where)], capture_output=True)
    return r.returncode == 0


def _fsize_limit(limit: int) -> Callable[[], None]:
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # write() fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@pytest.fixture(scope="module")
def gguf_4mib(tmp_path_factory) -> Path:
    """4 x [512, 1024] F16 (4 MiB): about 2.2 MiB as Q8_0."""
    p = tmp_path_factory.mktemp("gguf-4mib") / "in.gguf"
    rng = np.random.default_rng(11)
    kvs = gguf_string(b"general.architecture") + struct.pack("<I", 8) + gguf_string(b"llama")
    infos, data = b"", b""
    for i in range(4):
        x = (rng.standard_t(3, (512, 1024)) * 0.02).astype(np.float16).tobytes()
        infos += gguf_string(f"blk.{i}.ffn_up.weight".encode()) + struct.pack("<I", 2)
        infos += struct.pack("<QQIQ", 1024, 512, 1, len(data))
        data += x
    head = b"GGUF" + struct.pack("<IQQ", 3, 4, 1) + kvs + infos
    head += bytes(-len(head) % 32)
    p.write_bytes(head + data)
    return p


def _check_disk_full(r, out: Path, reason: str, src: Path, src_sha: str,
                     old: Optional[bytes]) -> None:
    assert r.returncode == 3, f"rc {r.returncode}, expected 3\n{r.stderr}"
    line = error_line(r.stderr)
    assert str(out) in line and reason in line, line
    assert r.stdout == ""
    if old is None:
        assert not os.path.lexists(out), f"{out} was created"
    else:
        assert out.read_bytes() == old, "the previous output was damaged"
    assert temporaries(out.parent) == [], temporaries(out.parent)
    assert sha256(src) == src_sha, "the input changed"


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "force-over-existing"])
@pytest.mark.parametrize("size", ["64k", "1m"])
def test_gguf_disk_full(size, existing, gguf_4mib, tmp_path):
    """ENOSPC on a small tmpfs (root with mount(2)); EFBIG from RLIMIT_FSIZE
    of the same size otherwise."""
    small = tmp_path / "small"
    mounted = _mount_tmpfs(small, size)
    limit = {"64k": 64 << 10, "1m": 1 << 20}[size]
    try:
        out = small / "out.gguf"
        old = None
        if existing:
            old = b"GGUF an older output that must survive" * 100
            out.write_bytes(old)
        before = sha256(gguf_4mib)
        args = ["convert", gguf_4mib, out, "--scheme", "q8_0", "--threads", "2"]
        if existing:
            args.append("--force")
        r = run(*args, preexec=None if mounted else _fsize_limit(limit))
        _check_disk_full(r, out, "No space left on device" if mounted else "File too large",
                         gguf_4mib, before, old)
        assert sorted(p.name for p in small.iterdir()) == (["out.gguf"] if existing else [])
        if not mounted:
            print("no tmpfs (not root or mount(2) refused): RLIMIT_FSIZE used instead")
    finally:
        if mounted:
            subprocess.run(["umount", str(small)], capture_output=True)


@pytest.mark.parametrize("limit", [100, 4096, 1 << 20])
def test_gguf_file_size_limit(limit, gguf_4mib, tmp_path):
    """EFBIG in the header (100 bytes), just after it, and half way through
    the tensors: one error, no temporary, nothing under OUT."""
    out = tmp_path / "out.gguf"
    before = sha256(gguf_4mib)
    r = run("convert", gguf_4mib, out, "--scheme", "q8_0", "--threads", "2",
            preexec=_fsize_limit(limit))
    _check_disk_full(r, out, "File too large", gguf_4mib, before, None)


# ---------------------------------------------------------------------------
# Determinism.

ISAS = ("scalar", "avx2", "avx512")
THREADS = (1, 2, 3)


@pytest.fixture(scope="module")
def supported_isas() -> List[str]:
    r = ok(run("info"))
    m = re.search(r"^supported isas: (.*)$", r.stdout, re.M)
    assert m, f"no 'supported isas:' line in nibble info:\n{r.stdout}"
    isas = m.group(1).split()
    assert isas and isas[0] == "scalar", isas
    assert set(isas) <= set(ISAS), isas
    return isas


def test_isa_paths_compared(supported_isas):
    """Scalar and at least one SIMD path on an x86 CPU with AVX2+FMA+F16C;
    the paths compared are listed as a warning in the test summary."""
    flags = set()
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma", "f16c"} <= flags:
        assert "avx2" in supported_isas, supported_isas
    missing = [i for i in ISAS if i not in supported_isas]
    warnings.warn(UserWarning(
        f"determinism: ISA paths compared: {', '.join(supported_isas)}; "
        f"not available on this CPU: {', '.join(missing) or 'none'}"))


# --- Adversarial data. -----------------------------------------------------

def _ties_row(cols: int, rng, kind: str) -> np.ndarray:
    """Values (n + 0.5) * s on a power-of-two step s, with the row's or each
    32-block's extreme chosen so that the scheme's scale is exactly s."""
    s = 2.0 ** -int(rng.integers(4, 11))
    row = np.empty(cols)
    if kind == "int8":          # absmax 127 s per row
        row[:] = (rng.integers(-127, 127, cols) + 0.5) * s
        row[rng.integers(0, cols)] = 127 * s
        return row
    for b in range(0, cols, 32):
        n = min(32, cols - b)
        if kind == "int4":      # absmax 7 s (or -8 s) per block
            blk = (rng.integers(-7, 7, n) + 0.5) * s
            blk[rng.integers(0, n)] = 7 * s if b % 64 else -8 * s
        else:                   # asymmetric: min -8 s / 0, max 7 s / 15 s
            lo, hi = (-8, 7) if b % 64 else (0, 15)
            blk = (rng.integers(lo, hi, n) + 0.5) * s
            blk[0], blk[-1] = lo * s, hi * s
        row[b:b + n] = blk
    return row


def adversarial(rows: int, cols: int, seed: int, limit: float = 65504.0) -> np.ndarray:
    """float64 values, every one exactly representable in the target dtype
    once rounded (F16 normal/subnormal grid or BF16)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_t(2, (rows, cols)) * 0.02
    out_mask = rng.random((rows, cols)) < 0.003
    x[out_mask] *= rng.choice([-300.0, 300.0], out_mask.sum())
    special = [
        lambda: np.zeros(cols),
        lambda: np.where(rng.random(cols) < 0.05, rng.choice([-limit, limit], cols),
                         rng.standard_t(2, cols) * 0.02),
        lambda: rng.integers(-1023, 1024, cols) * 2.0 ** -24,             # F16 subnormals
        lambda: _ties_row(cols, rng, "int8"),
        lambda: _ties_row(cols, rng, "int4"),
        lambda: _ties_row(cols, rng, "asym"),
        lambda: np.full(cols, -0.75),
        lambda: np.where(rng.random(cols) < 0.5, -0.0, 0.0) + np.eye(1, cols, 5)[0] * 2.0 ** -24,
        lambda: np.concatenate([[limit], rng.integers(-1023, 1024, cols - 1) * 2.0 ** -24]),
        lambda: np.tile([limit, -limit], cols // 2),
    ]
    for i, make in enumerate(special):
        if i < rows:
            x[(i * 7) % rows] = make()
    return np.clip(x, -limit, limit)


def cast_ties(cols: int) -> np.ndarray:
    """FP32 values halfway between two FP16 values (ties of the fp16 cast),
    below the overflow threshold (65520)."""
    base = [1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 2.0 ** -25, 3 * 2.0 ** -25, -5 * 2.0 ** -25,
            65519.0, -65519.0, 2048 + 1, 2048 + 3, 0.1, -0.0, 6.1035156e-05]
    return np.resize(np.array(base), cols)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def store(x: np.ndarray, dtype: str):
    """(raw bytes, safetensors dtype code)."""
    if dtype == "F16":
        return x.astype(np.float16).tobytes(), "F16"
    if dtype == "BF16":
        return to_bf16_bits(x).tobytes(), "BF16"
    return x.astype(np.float32).tobytes(), "F32"


ST_TENSORS = [
    # name, rows, cols, dtype
    ("model.embed_tokens.weight", 64, 384, "F16"),
    ("model.layers.0.self_attn.q_proj.weight", 384, 384, "F16"),
    ("model.layers.0.self_attn.k_proj.weight", 128, 384, "F16"),
    ("model.layers.0.self_attn.v_proj.weight", 128, 384, "F16"),
    ("model.layers.0.self_attn.o_proj.weight", 384, 384, "F32"),
    ("model.layers.0.mlp.gate_proj.weight", 257, 384, "BF16"),
    ("model.layers.0.mlp.up_proj.weight", 257, 384, "BF16"),
    ("model.layers.0.mlp.down_proj.weight", 384, 256, "F32"),
    ("model.layers.0.input_layernorm.weight", 0, 384, "F32"),   # 1-D
    ("model.layers.1.self_attn.q_proj.weight", 131, 384, "F32"),
    ("model.layers.1.self_attn.k_proj.weight", 37, 384, "F32"),
    ("model.layers.1.self_attn.v_proj.weight", 37, 384, "F32"),
    ("model.layers.1.mlp.down_proj.weight", 1, 1024, "F16"),
    ("model.norm.weight", 0, 384, "F16"),
    ("lm_head.weight", 64, 384, "F32"),
]

MIXED_TOML = """\
default = "int4"
group_size = 64
scale_dtype = "f32"

[[rule]]
match = "lm_head"
scheme = "fp16"

[[rule]]
match = "*.mlp.down_proj"
scheme = "int8"

[[rule]]
match = 're:model\\.layers\\.1\\.self_attn\\.(q|k|v)_proj$'
scheme = "int4-g32-asym"

[[rule]]
match = "*.self_attn.o_proj"
scheme = "int8-g128"

[[rule]]
match = "model.embed_tokens"
scheme = "bf16"
"""


def write_adversarial_safetensors(src: Path) -> None:
    src.mkdir(parents=True)
    header, data = {}, b""
    for k, (name, rows, cols, dtype) in enumerate(ST_TENSORS):
        if rows == 0:
            x = 1 + adversarial(1, cols, 100 + k)[0] * 0.01
        else:
            x = adversarial(rows, cols, 100 + k, 65280.0 if dtype == "BF16" else 65504.0)
            if dtype == "F32":
                x[(3 * rows) // 4] = cast_ties(cols)
        raw, code = store(x, dtype)
        shape = [cols] if rows == 0 else [rows, cols]
        header[name] = {"dtype": code, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    (src / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data)
    (src / "config.json").write_text('{"model_type": "llama", "torch_dtype": "float16"}\n')


GGUF_TENSORS = [
    # name, rows, ne0, ggml type (0 F32, 1 F16, 30 BF16)
    ("token_embd.weight", 72, 384, 1),
    ("blk.0.attn_norm.weight", 0, 384, 0),
    ("blk.0.attn_q.weight", 384, 384, 1),
    ("blk.0.attn_k.weight", 131, 384, 0),
    ("blk.0.ffn_up.weight", 257, 384, 30),
    ("blk.0.ffn_down.weight", 384, 256, 0),
    ("blk.0.odd.weight", 8, 40, 1),          # no 32-block fits: kept, a warning
    ("blk.1.ffn_gate.weight", 37, 512, 30),
    ("blk.1.attn_v.weight", 1, 4096, 0),
    ("output.weight", 72, 384, 0),
]
GGML_CODE = {0: "F32", 1: "F16", 30: "BF16"}


def write_adversarial_gguf(path: Path) -> None:
    kvs = gguf_string(b"general.architecture") + struct.pack("<I", 8) + gguf_string(b"llama")
    kvs += gguf_string(b"general.name") + struct.pack("<I", 8) + gguf_string(b"adversarial")
    infos, data = b"", b""
    for k, (name, rows, ne0, t) in enumerate(GGUF_TENSORS):
        if rows == 0:
            x = 1 + adversarial(1, ne0, 200 + k)[0] * 0.01
            dims = [ne0]
        else:
            x = adversarial(rows, ne0, 200 + k, 65280.0 if t == 30 else 65504.0)
            dims = [ne0, rows]
        raw, _ = store(x, GGML_CODE[t])
        data += bytes(-len(data) % 32)   # aligned offsets; nothing after the last tensor
        infos += gguf_string(name.encode()) + struct.pack("<I", len(dims))
        infos += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", t, len(data))
        data += raw
    head = b"GGUF" + struct.pack("<IQQ", 3, len(GGUF_TENSORS), 2) + kvs + infos
    head += bytes(-len(head) % 32)
    path.write_bytes(head + data)


# Output cases: id -> (input kind, convert args).
CONVERT_CASES = {
    "int8": ("st", ["--scheme", "int8"]),
    "int4-g128": ("st", ["--scheme", "int4-g128"]),
    "int4-g32-asym": ("st", ["--scheme", "int4-g32-asym"]),
    "fp16": ("st", ["--scheme", "fp16"]),
    "mixed": ("st", ["--config", "MIXED"]),
    "q8_0": ("gguf", ["--scheme", "q8_0"]),
    "q4_0": ("gguf", ["--scheme", "q4_0"]),
    "q4_1": ("gguf", ["--scheme", "q4_1"]),
}
DEQUANT_CASES = {   # id -> (converted case, --dtype)
    "dequant-int8-f32": ("int8", "f32"),
    "dequant-int4-g128-f16": ("int4-g128", "f16"),
    "dequant-int4-g32-asym-bf16": ("int4-g32-asym", "bf16"),
    "dequant-mixed-f32": ("mixed", "f32"),
}


class Outputs:
    """Runs conversions into fresh directories and hashes what they wrote."""

    def __init__(self, base: Path):
        self.base = base
        self.st = base / "adv"
        write_adversarial_safetensors(self.st)
        self.gguf = base / "adv.gguf"
        write_adversarial_gguf(self.gguf)
        self.config = base / "mixed.toml"
        self.config.write_text(MIXED_TOML)
        self.inputs = {"st": hashes(self.st), "gguf": hashes(self.gguf)}
        self.n = 0
        self.refs: Dict[str, tuple] = {}
        self.ref_dirs: Dict[str, Path] = {}

    def _fresh(self) -> Path:
        self.n += 1
        d = self.base / f"run{self.n}"
        d.mkdir()
        return d

    def convert(self, case: str, threads: int, isa: str):
        kind, args = CONVERT_CASES[case]
        args = [str(self.config) if a == "MIXED" else a for a in args]
        src = self.st if kind == "st" else self.gguf
        d = self._fresh()
        out = d / ("out" if kind == "st" else "out.gguf")
        rep = d / "report.json"
        r = ok(run("convert", src, out, *args, "--threads", threads, "--isa", isa,
                   "--report", rep, "--quiet"))
        report = json.loads(rep.read_text())
        report.pop("output")
        got = (hashes(out), report)
        assert hashes(src) == self.inputs[kind], "the input changed"
        return got, out, r

    def dequant(self, case: str, threads: int, isa: str):
        conv, dtype = DEQUANT_CASES[case]
        src = self.ref_dir(conv)
        d = self._fresh()
        out = d / "out"
        r = ok(run("dequant", src, out, "--dtype", dtype, "--threads", threads, "--quiet",
                   env={"NIBBLE_ISA": isa}))
        return (hashes(out), None), out, r

    def ref_dir(self, case: str) -> Path:
        self.ref(case)
        return self.ref_dirs[case]

    def ref(self, case: str):
        """The scalar, one-thread output (computed once)."""
        if case not in self.refs:
            fn = self.dequant if case in DEQUANT_CASES else self.convert
            got, out, _ = fn(case, 1, "scalar")
            self.refs[case] = got
            self.ref_dirs[case] = out
        return self.refs[case]

    def run(self, case: str, threads: int, isa: str):
        fn = self.dequant if case in DEQUANT_CASES else self.convert
        got, out, r = fn(case, threads, isa)
        shutil.rmtree(out.parent)
        return got, r


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return Outputs(tmp_path_factory.mktemp("determinism"))


def test_adversarial_inputs_convert(outputs):
    """Every scheme accepts the adversarial rows (none is an overflow error)
    and applies itself: the references of the determinism test below."""
    for case, (kind, _) in CONVERT_CASES.items():
        files, report = outputs.ref(case)
        assert files, case
        schemes = {t["scheme"] for t in report["tensors"]}
        assert report["totals"]["tensors"] == len(ST_TENSORS if kind == "st" else GGUF_TENSORS)
        want = ({"int4-g64", "int8", "int4-g32-asym", "int8-g128", "fp16", "bf16"}
                if case == "mixed" else {case})
        assert want <= schemes, (case, schemes)
    for case in DEQUANT_CASES:
        files, _ = outputs.ref(case)
        assert "model.safetensors" in files and "config.json" in files, files


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", [*CONVERT_CASES, *DEQUANT_CASES])
def test_same_bytes_for_every_thread_count_and_isa(case, isa, outputs, supported_isas):
    if isa not in supported_isas:
        pytest.skip(f"this CPU has no {isa} path (supported isas: {' '.join(supported_isas)})")
    ref_files, ref_report = outputs.ref(case)
    # The reference is scalar with one thread: run it again (twice the same
    # input), then the other thread counts.
    for threads in THREADS:
        (files, report), r = outputs.run(case, threads, isa)
        where = f"{case}, --isa {isa}, --threads {threads}"
        diff = sorted(k for k in set(files) | set(ref_files) if files.get(k) != ref_files.get(k))
        assert not diff, f"{where}: files differ from scalar/1 thread: {diff}"
        assert report == ref_report, f"{where}: the report differs"
