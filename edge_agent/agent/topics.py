"""The topic namespace, in one place. Documented with examples in docs/TOPICS.md.

Every topic of a gateway lives under ``district/v1/<gateway>/``:

south (devices and responders, on the local broker)
  lamp/<id>/state            lamp -> gateway     LampState
  lamp/<id>/set              gateway -> lamp     LampCommand (QoS 1)
  camera/<id>/event          camera -> gateway   CameraEvent
  camera/<id>/status         camera -> gateway   DeviceStatus
  wearable/<id>/event        wearable -> gateway WearableEvent (sos, fall, geofence_exit)
  wearable/<id>/vitals       wearable -> gateway WearableVitals
  wearable/<id>/heartbeat    wearable -> gateway Heartbeat
  responder/<id>/alert       gateway -> phone    AlertMessage (QoS 1)
  responder/<id>/ack         phone -> gateway    ResponderAck
north (the city platform; the same broker when there is no uplink)
  status                     retained "online" / "offline" (last will)
  alert                      AlertMessage, every change of every alert (QoS 1, outbox)
  event/<topic>              what a rule's publish action sends (QoS 1, outbox)
  policy                     centre -> gateway: retained signed policy bundle
  policy/ack                 gateway -> centre: accepted / already_active / rejected + reason
  rollout                    gateway -> centre: retained {policy_version, lamps, on_version, retries}
south, for policy rollout
  lamp/<id>/program          gateway -> lamp: retained LampProgram with the policy version
"""

from __future__ import annotations

PREFIX = "district/v1"
POLICY = "policy"  # north, retained signed bundle from the centre
POLICY_ACK = "policy/ack"  # north, the gateway's answer
ROLLOUT = "rollout"  # north, retained: how many lamps run the active policy version

SOUTH_INBOUND = (
    "lamp/+/state",
    "camera/+/event",
    "camera/+/status",
    "wearable/+/event",
    "wearable/+/vitals",
    "wearable/+/heartbeat",
    "responder/+/ack",
)


def root(gateway: str) -> str:
    return f"{PREFIX}/{gateway}"


def split(gateway: str, topic: str) -> tuple[str, str, str] | None:
    """``district/v1/gw/lamp/L1/state`` -> ("lamp", "L1", "state"); None if not ours."""
    prefix = root(gateway) + "/"
    if not topic.startswith(prefix):
        return None
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]
