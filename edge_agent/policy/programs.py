"""Lighting programs compiled once into the numbers the pure level functions take.

Owns: ``CompiledProgram`` (a program's switch kinds, offsets and steps as tuples, steps sorted
in night order) and the gateway-side convenience ``level_at``. The twin builds its arrays from
the same ``CompiledProgram`` fields, so both sides feed identical numbers to identical code.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.policy.lighting import decide_level, night_minute
from edge_agent.policy.model import Policy, Program, parse_switch
from edge_agent.policy.units import parse_clock


@dataclass(frozen=True, slots=True)
class CompiledProgram:
    name: str
    on_kind: int
    on_value: float
    off_kind: int
    off_value: float
    base_level: float
    step_minutes: tuple[float, ...]
    step_levels: tuple[float, ...]
    boost_level: float
    boost_minutes: float

    @property
    def n_steps(self) -> int:
        return len(self.step_minutes)

    def level_at(
        self,
        epoch_day: int,
        minute_of_day: float,
        latitude: float,
        longitude: float,
        utc_offset_minutes: float,
        *,
        boost_active: bool = False,
        override_level: float = -1.0,
    ) -> float:
        """This program's lamp level at a local minute, with an optional boost or override."""
        return decide_level(
            epoch_day,
            minute_of_day,
            latitude,
            longitude,
            utc_offset_minutes,
            self.on_kind,
            self.on_value,
            self.off_kind,
            self.off_value,
            self.base_level,
            self.step_minutes,
            self.step_levels,
            self.n_steps,
            boost_active,
            self.boost_level,
            override_level,
        )


def compile_program(name: str, program: Program) -> CompiledProgram:
    on_kind, on_value = parse_switch(program.on, evening=True)
    off_kind, off_value = parse_switch(program.off, evening=False)
    steps = sorted(
        ((float(parse_clock(s.at)), float(s.level)) for s in program.steps),
        key=lambda step: night_minute(step[0]),
    )
    boost = program.boost
    return CompiledProgram(
        name=name,
        on_kind=on_kind,
        on_value=on_value,
        off_kind=off_kind,
        off_value=off_value,
        base_level=float(program.level),
        step_minutes=tuple(m for m, _ in steps),
        step_levels=tuple(level for _, level in steps),
        boost_level=float(boost.level) if boost else 0.0,
        boost_minutes=float(boost.minutes) if boost else 0.0,
    )


def compile_programs(policy: Policy) -> dict[str, CompiledProgram]:
    return {name: compile_program(name, program) for name, program in policy.programs.items()}
