# ruff: noqa: UP031  (%-formatting: this file runs under MicroPython)
# Run by tests/hil/test_node_sun.py under the MicroPython unix port
# (MICROPYPATH=hardware/firmware/lamp_node). argv: LAT LON UTC_OFFSET FIRST_DAY DAYS ON_KIND
# ON_OFFSET OFF_KIND OFF_OFFSET, days since 2000-01-01 local. One line a day: "day on off".
import sys

import sun

lat, lon, off = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
first, days = int(sys.argv[4]), int(sys.argv[5])
kinds = [int(a) for a in sys.argv[6:10]]
for d in range(first, first + days):
    on, off_min = sun.night(d, lat, lon, off, kinds[0], kinds[1], kinds[2], kinds[3])
    print("%d %d %d" % (d, on, off_min))
