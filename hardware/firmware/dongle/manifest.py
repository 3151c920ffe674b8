# Freeze the wearable dongle firmware.
metadata(description="Wearable dongle: radio packets to framed, acknowledged serial", version="1.0")
module("crc.py", base_path="../../../edge_agent/codec")
module("frames.py", base_path="../../../edge_agent/codec")
module("radio.py")
module("sender.py")
module("app.py")
module("board_rp2.py")
module("main.py")
