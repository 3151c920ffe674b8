"""Lamp node main loop: boot from the stored settings (or the flashed config, or the safe
defaults), then bytes from the board's UART into the RTU slave, replies back out, the lamp's
clock ticked from the board's millisecond ticks, settings saved atomically when they change,
and the watchdog fed once per healthy loop. The board is injected.

Boot order: ``state`` record (Store: newest valid copy) -> else ``node.json`` (flashed config)
-> else defaults (unit 1, clock program, no timeout). Clock: the board's RTC if it has a valid
one, else unknown (lit at SAFE_LEVEL in fallback until the master syncs it).
Must not import: machine, board modules (main.py / unix_main.py choose the board).
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fwtypes import Board

try:
    from hardware.firmware.common.store import Store  # type: ignore[import-not-found, unused-ignore]
    from hardware.firmware.lamp_node import regs  # type: ignore[import-not-found, unused-ignore]
    from hardware.firmware.lamp_node.lamp import STATE_WORDS, Lamp  # type: ignore[import-not-found, unused-ignore]
    from hardware.firmware.lamp_node.rtu import RtuSlave  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython
    import regs  # type: ignore[import-not-found, no-redef, unused-ignore]
    from lamp import STATE_WORDS, Lamp  # type: ignore[import-not-found, no-redef, unused-ignore]
    from rtu import RtuSlave  # type: ignore[import-not-found, no-redef, unused-ignore]
    from store import Store  # type: ignore[import-not-found, no-redef, unused-ignore]

WDT_MS = 4000  # watchdog timeout (the RP2040 allows up to 8388 ms)
RESET_WDT = 1
_KINDS = {"sunset": 0, "sunrise": 0, "sun": 0, "dusk": 1, "dawn": 1, "civil": 1, "clock": 2}


def apply_config(lamp: Lamp, path: str, unit: int) -> None:
    """Defaults from the flashed ``node.json`` (see hardware/README.md); missing keys keep the
    built-in defaults, a bad file is ignored (the lamp still boots)."""
    hr = lamp.hr
    hr[regs.HR_UNIT] = unit
    try:
        import json

        with open(path) as f:
            c = json.load(f)
        hr[regs.HR_UNIT] = int(c.get("unit", unit))
        hr[regs.HR_SILENCE_TIMEOUT] = int(c.get("silence_timeout", 0))
        hr[regs.HR_LATITUDE] = round(float(c.get("latitude", 0.0)) * 100) & 0xFFFF
        hr[regs.HR_LONGITUDE] = round(float(c.get("longitude", 0.0)) * 100) & 0xFFFF
        hr[regs.HR_UTC_OFFSET] = int(c.get("utc_offset", 0)) & 0xFFFF
        hr[regs.HR_ON_KIND] = _KINDS[c.get("on", "clock")]
        hr[regs.HR_ON_OFFSET] = int(c.get("on_offset", 0)) & 0xFFFF
        hr[regs.HR_OFF_KIND] = _KINDS[c.get("off", "clock")]
        hr[regs.HR_OFF_OFFSET] = int(c.get("off_offset", 0)) & 0xFFFF
        steps = c.get("program", [])[: regs.PROGRAM_MAX_STEPS]  # [[minute, level], ...]
        for i in range(len(steps)):
            hr[regs.HR_PROGRAM_BASE + 2 * i] = int(steps[i][0]) % 1440
            hr[regs.HR_PROGRAM_BASE + 2 * i + 1] = min(100, int(steps[i][1]))
        hr[regs.HR_PROGRAM_COUNT] = len(steps)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass


def boot(board: "Board", unit: int) -> "tuple[Lamp, Store]":
    b = board
    lamp = Lamp(b.pwm, b.sensor)
    store = Store(b.path("state"), b.fs_step)
    data = store.load()
    restored = data is not None and lamp.restore(data)
    if not restored:
        apply_config(lamp, b.path("node.json"), unit)
    lamp.boot(b.rtc_read(), b.reset_cause() == RESET_WDT, store.found > 0 and not restored)
    return lamp, store


def run(board: "Board", unit: int, gap_ms: int = 20, tick_ms: int = 10) -> Lamp:
    """Serve until the board reports end of input (``board.closed``)."""
    b = board
    lamp, store = boot(b, unit)
    slave = RtuSlave(lamp.hr[regs.HR_UNIT], lamp)
    state = bytearray(2 * STATE_WORDS)
    b.wdt_start(WDT_MS)
    last_tick = b.ticks_ms()
    last_rx = last_tick
    while not b.closed:
        b.wdt_feed()  # only here: a loop that stops coming round reboots the node
        if b.wait_rx(tick_ms):
            now = b.ticks_ms()
            lamp.tick(b.ticks_diff(now, last_tick))
            last_tick = now
            while True:
                c = b.read_byte()
                if c < 0:
                    break
                n = slave.feed(c)
                if n:
                    if lamp.dirty:  # the write changed stored settings: on flash before "done"
                        lamp.to_state(state)
                        store.save(state)
                    b.write(slave.tx, n)
            last_rx = b.ticks_ms()
        now = b.ticks_ms()
        if slave.pending() and b.ticks_diff(now, last_rx) > gap_ms:
            slave.reset()
        d = b.ticks_diff(now, last_tick)
        if d >= tick_ms:
            lamp.tick(d)
            last_tick = now
        if lamp.clock_synced:
            lamp.clock_synced = False
            b.rtc_write(lamp.clock_s, lamp.hr[regs.HR_CLOCK_RATE])
        if lamp.dirty and not slave.pending():
            lamp.to_state(state)
            store.save(state)
        if slave.unit != lamp.hr[regs.HR_UNIT]:
            slave.unit = lamp.hr[regs.HR_UNIT]  # after the reply, which went out at the old one
    return lamp
