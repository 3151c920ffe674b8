# ruff: noqa: UP031  (%-formatting: this file runs under MicroPython)
# Run by tests/hil/test_node_sun.py under the MicroPython unix port
# (MICROPYPATH=hardware/firmware/lamp_node). argv: LAT LON UTC_OFFSET FIRST_DAY DAYS, days since
# 2000-01-01 local. Prints one line a day: "day sunset sunrise dusk dawn" (minutes, nan if none).
import sys

import sun

lat, lon, off = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
first, days = int(sys.argv[4]), int(sys.argv[5])
for d in range(first, first + days):
    print(
        "%d %.4f %.4f %.4f %.4f"
        % (
            d,
            sun.event_minute(d, lat, lon, off, 90.833, False),
            sun.event_minute(d, lat, lon, off, 90.833, True),
            sun.event_minute(d, lat, lon, off, 96.0, False),
            sun.event_minute(d, lat, lon, off, 96.0, True),
        )
    )
