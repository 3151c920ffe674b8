# Freeze the lamp node firmware (mpy-cross / `mpremote mip`-style manifest).
metadata(description="Lamp node: Modbus RTU slave with local fallback program", version="1.2")
module("crc.py", base_path="../../../edge_agent/codec")
module("regs.py")
module("lamp.py")
module("rtu.py")
module("app.py")
module("board_rp2.py")
module("main.py")
