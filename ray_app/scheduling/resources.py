"""CPUs and GPUs as one value: what a job asks for, what a project holds, what is free."""

from __future__ import annotations

from dataclasses import dataclass

EPS = 1e-9  # Ray counts resources in 1/10000 units: sums of floats must not refuse an exact fit


@dataclass(frozen=True)
class Resources:
    cpus: float = 0.0
    gpus: float = 0.0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpus + other.cpus, self.gpus + other.gpus)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpus - other.cpus, self.gpus - other.gpus)

    def times(self, factor: float) -> Resources:
        return Resources(self.cpus * factor, self.gpus * factor)

    def at_least_zero(self) -> Resources:
        return Resources(max(0.0, self.cpus), max(0.0, self.gpus))

    def fits(self, room: Resources) -> bool:
        return self.cpus <= room.cpus + EPS and self.gpus <= room.gpus + EPS

    def minimum(self, other: Resources) -> Resources:
        return Resources(min(self.cpus, other.cpus), min(self.gpus, other.gpus))

    def shares(self, other: Resources) -> bool:
        """Whether some of this is of a kind `other` has (a victim that frees what is needed)."""
        return (self.cpus > EPS and other.cpus > EPS) or (self.gpus > EPS and other.gpus > EPS)

    def describe(self) -> str:
        parts = [f"{self.gpus:g} GPU{'s' if self.gpus != 1 else ''}"] if self.gpus > EPS else []
        if self.cpus > EPS or not parts:
            parts.append(f"{self.cpus:g} CPU{'s' if self.cpus != 1 else ''}")
        return ", ".join(parts)


NONE = Resources()
