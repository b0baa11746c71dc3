"""py-spy around a measured phase: ``record`` one process into a speedscope
file, then ``summarise`` it into its hottest functions.

py-spy leaves out idle threads by default, so the samples are the time the
process was running *or runnable* (on a CPU, or ready and waiting for one):
``active`` is that share of the recording, and each function's share is of the
active samples. Compare it with the CPU the runner measured: the difference is
time spent waiting for a core.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from pathlib import Path

from benchmarks.infra import BIN

RATE = 100  # samples per second


def record(pid: int, output: Path, seconds: float) -> subprocess.Popen:
    """Start ``py-spy record`` on ``pid`` for ``seconds`` (non-blocking sampling)."""
    command = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(int(seconds))]
    command += ["--rate", str(RATE), "--format", "speedscope", "--output", str(output), "--nonblocking"]
    with open(f"{output}.log", "wb") as log:  # a file, not a pipe: its progress output must never block it
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)


def finish(process: subprocess.Popen, seconds: float) -> str | None:
    """Wait for a recording to end; None if it went well, else why not.

    py-spy sometimes does not stop by itself: after a grace period it gets
    SIGINT (on which it still writes its output), then SIGKILL.
    """
    try:
        process.wait(timeout=seconds + 15)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return "py-spy hung and was killed"
    if process.returncode not in (0, -signal.SIGINT):
        return f"py-spy exited with {process.returncode}"
    return None


def _label(frame: dict) -> str:
    file = frame.get("file", "")
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{frame['name']} ({file}:{frame.get('line', '?')})"


def summarise(path: Path, seconds: float, top: int = 12) -> str:
    """The functions with the most samples on top of the stack (self) and anywhere on it (total)."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    own: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0.0
    for profile in data["profiles"]:  # weights are seconds (py-spy's speedscope unit)
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            total += weight
            if stack:
                own[stack[-1]] += weight
            for index in set(stack):
                inclusive[index] += weight
    if not total:
        return f"{path.name}: no active samples"
    lines = [f"{path.name}: active {100.0 * total / seconds:.0f}% of the {seconds:g}s recorded"]
    lines.append("  self%  function")
    lines += [f"  {100 * n / total:5.1f}  {_label(frames[i])}" for i, n in own.most_common(top)]
    lines.append("  total% function")
    lines += [f"  {100 * n / total:5.1f}  {_label(frames[i])}" for i, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)
