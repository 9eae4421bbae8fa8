"""End to end: SIGINT / SIGTERM sent to the real `nibble convert` and
`nibble dequant` (NIBBLE_BIN) while they write their output.

Each run is started on a checkpoint big enough to take seconds on the scalar
path with one thread (8 x [4096, 4096] F16 = 256 MiB: about 4 s for convert and
2.5 s for dequant to F32 on the 2-core development machine), and signalled as
soon as its temporary directory `.OUT.nibble-tmp-PID-*` appears (polled every
5 ms) or once the first output file exists inside it. Expected: exit 128 +
signal (130 / 143), nothing under OUT, no temporary left next to it, the input
byte for byte unchanged. A double SIGINT sent back to back takes the immediate
path (the handler removes the temporary directory itself and exits 130,
printing nothing). A run that ends before the signal could be sent fails the
test: the checkpoint is then too small for the machine.

Skipped without NIBBLE_BIN."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

NIBBLE = os.environ.get("NIBBLE_BIN", "")
pytestmark = pytest.mark.skipif(not NIBBLE or not Path(NIBBLE).is_file(),
                                reason="NIBBLE_BIN is not set to the built nibble binary")

N_TENSORS, ROWS, COLS = 8, 4096, 4096
SLOW = ["--isa", "scalar", "--threads", "1"]


def write_checkpoint(src: Path) -> None:
    """N_TENSORS F16 linear weights of finite heavy-tailed values, written
    tensor by tensor in the safetensors layout, and a config.json."""
    src.mkdir(parents=True)
    pool = (np.random.default_rng(7).standard_t(4, 1 << 20) * 0.02).astype(np.float16)
    nbytes = ROWS * COLS * 2
    header = {f"model.layers.{i}.mlp.up_proj.weight":
              {"dtype": "F16", "shape": [ROWS, COLS],
               "data_offsets": [i * nbytes, (i + 1) * nbytes]}
              for i in range(N_TENSORS)}
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    block = np.resize(pool, ROWS * COLS)
    with open(src / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for i in range(N_TENSORS):
            np.roll(block, 4099 * i).tofile(f)
    (src / "config.json").write_text('{"model_type": "llama", "torch_dtype": "float16"}\n')


def snapshot(root: Path) -> Dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The F16 checkpoint, and its compressed-tensors conversion (for
    dequant), each with its snapshot."""
    base = tmp_path_factory.mktemp("interrupt")
    src = base / "in"
    write_checkpoint(src)
    ct = base / "ct"
    r = subprocess.run([NIBBLE, "convert", str(src), str(ct), "--scheme", "int4", "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return {"convert": (src, snapshot(src)), "dequant": (ct, snapshot(ct))}


def leftovers(parent: Path) -> List[str]:
    return sorted(p.name for p in parent.iterdir()
                  if "nibble-tmp" in p.name or "nibble-old" in p.name)


def wait_for(proc: subprocess.Popen, pattern: Path, err: Path, inside: bool) -> None:
    """Polls every 5 ms until a directory matching the glob `pattern` exists
    (and, if `inside`, holds an entry); fails if nibble exits first."""
    t0 = time.monotonic()
    path = pattern
    while True:
        for path in sorted(pattern.parent.glob(pattern.name)):
            try:
                if path.is_dir() and (not inside or any(path.iterdir())):
                    return
            except FileNotFoundError:
                pass
        rc = proc.poll()
        if rc is not None:
            pytest.fail(f"nibble exited (rc {rc}) before it could be signalled: the checkpoint "
                        f"is too small for this machine\n{err.read_text()}")
        if time.monotonic() - t0 > 60:
            pytest.fail(f"{path} did not appear within 60 s")
        time.sleep(0.005)


def _status_masks(pid: int, field) -> List[int]:
    """The hex masks of the /proc/PID/status lines starting with `field`."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return []
    return [int(l.split()[1], 16) for l in status.splitlines() if l.startswith(field)]


def wait_caught(proc: subprocess.Popen, sigs) -> None:
    """Polls /proc/PID/status until nibble has handlers for `sigs`."""
    want = sum(1 << (s - 1) for s in sigs)
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 10:
        if any(m & want == want for m in _status_masks(proc.pid, "SigCgt:")):
            return
        time.sleep(0.0005)
    if proc.poll() is None:
        pytest.fail("nibble installed no SIGINT/SIGTERM handler within 10 s")


def wait_delivered(proc: subprocess.Popen, sig: int) -> None:
    """Polls /proc/PID/status until `sig` is no longer pending for the process."""
    bit = 1 << (sig - 1)
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 10:
        pending = _status_masks(proc.pid, ("ShdPnd:", "SigPnd:"))
        if not any(p & bit for p in pending):
            return
        time.sleep(0.0005)
    if proc.poll() is None:
        pytest.fail(f"signal {sig} still pending after 10 s")


@pytest.mark.parametrize("mode", ["SIGINT", "SIGTERM", "double-SIGINT"])
@pytest.mark.parametrize("command", ["convert", "dequant"])
def test_interrupted(command, mode, checkpoints, tmp_path):
    src, before = checkpoints[command]
    out = tmp_path / "out"
    args = ["convert", str(src), str(out), "--scheme", "int4", *SLOW] if command == "convert" \
        else ["dequant", str(src), str(out), "--threads", "1"]
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as ef, open(tmp_path / "stdout.txt", "wb") as of:
        proc = subprocess.Popen([NIBBLE, *args], stdout=of, stderr=ef)
    try:
        temp = tmp_path / f".out.nibble-tmp-{proc.pid}-*"
        # SIGTERM as soon as the directory exists; the others once a partial
        # output file is inside it.
        wait_for(proc, temp, err, inside=mode != "SIGTERM")
        # The handlers are installed just after the directory is created; a
        # signal in between kills nibble (test_signal_right_after_mkdir).
        wait_caught(proc, (signal.SIGINT, signal.SIGTERM))
        if proc.poll() is not None:
            pytest.fail(f"nibble finished (rc {proc.returncode}) before the signal was sent")
        sig = signal.SIGTERM if mode == "SIGTERM" else signal.SIGINT
        os.kill(proc.pid, sig)
        if mode == "double-SIGINT":
            # A second kill while the first is still pending would merge with
            # it (standard signals do not queue): wait for the delivery, as a
            # second Ctrl-C from a person always does.
            wait_delivered(proc, sig)
            os.kill(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = err.read_text(errors="replace")
    assert rc == 128 + sig, f"rc {rc}, expected {128 + sig}\n{stderr}"
    assert not os.path.lexists(out), f"{out} exists"
    assert leftovers(tmp_path) == [], leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stderr.txt", "stdout.txt"]
    errors = [l for l in stderr.splitlines() if "error" in l]
    if mode == "double-SIGINT":
        # The immediate path: removed from the handler, no message.
        assert errors == [], stderr
    else:
        assert errors == [f"nibble: error: interrupted by {mode}: nothing written"], stderr
        assert stderr.splitlines()[-1] == errors[0], stderr
    assert snapshot(src) == before, "the input changed"


# Stops nibble (under gdb) on every mkdir until OUT's temporary directory
# exists, then resumes it with SIGTERM: the earliest moment a Ctrl-C or a kill
# can find the directory. Deterministic, unlike a race from outside.
GDB_SCRIPT = r"""
import gdb, glob, os
gdb.execute("set startup-with-shell off")
gdb.execute("handle SIGTERM nostop noprint pass")
gdb.execute("catch syscall mkdir mkdirat")
gdb.execute("run")
while True:
    pid = gdb.selected_inferior().pid
    if pid == 0:
        print("NIBBLE-TEST: exited before the temporary directory appeared")
        break
    if glob.glob(os.path.join(PARENT, ".out.nibble-tmp-%d-*" % pid)):
        gdb.execute("delete")
        gdb.execute("signal SIGTERM")
        break
    gdb.execute("continue")
"""


@pytest.mark.parametrize("command", ["convert", "dequant"])
def test_signal_right_after_mkdir(command, checkpoints, tmp_path):
    gdb = shutil.which("gdb")
    assert gdb is not None, "gdb is needed to stop nibble right after its mkdir " \
        "(scripts/setup-deps.sh installs it)"
    src, before = checkpoints[command]
    out = tmp_path / "out"
    args = ["convert", str(src), str(out), "--scheme", "int4", *SLOW] if command == "convert" \
        else ["dequant", str(src), str(out), "--threads", "1"]
    script = tmp_path / "stop.py"
    script.write_text(f"PARENT = {str(tmp_path)!r}\n" + GDB_SCRIPT)
    r = subprocess.run([gdb, "-nx", "-batch", "-x", str(script), "--args", NIBBLE, *args],
                       capture_output=True, text=True, timeout=120)
    assert "NIBBLE-TEST: exited" not in r.stdout, r.stdout
    assert "exited with code 0217" in r.stdout, r.stdout[-2000:]   # 143 = 128 + SIGTERM
    assert not os.path.lexists(out)
    assert leftovers(tmp_path) == [], leftovers(tmp_path)
