"""TALQ 2.7.1 interoperability: lighting calendars and control programs in and out (docs/TALQ.md).

Owns: the mapping between our policy's lighting (``[programs]``, ``[assign]``) and TALQ's
``Calendar`` / ``CalendarRule`` / ``ControlProgramOne`` objects. Pure: no file or network I/O.
"""

from edge_agent.talq.common import Site, TalqError
from edge_agent.talq.export import export_talq
from edge_agent.talq.importer import import_talq, policy_toml

__all__ = ["Site", "TalqError", "export_talq", "import_talq", "policy_toml"]
