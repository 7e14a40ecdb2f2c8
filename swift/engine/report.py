"""How a download ends: a :class:`Report`, or a one-line :class:`DownloadError`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


class DownloadError(Exception):
    """The download failed; the message is one line for the user."""


class ChecksumMismatch(DownloadError):
    """The finished file does not match the checksum the user gave; it stays at NAME.part."""


@dataclass
class Report:
    """The end-of-download summary; ``bytes_by_source`` keys are ``local`` or ``host:port``."""

    url: str
    path: str
    size: int
    seconds: float
    mode: str  # "parallel" or "single"
    bytes_by_source: dict[str, int]
    resumed_bytes: int = 0
    dropped_bytes: int = 0
    notices: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Bytes per second fetched by this run (resumed bytes not counted)."""
        return (self.size - self.resumed_bytes) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        by = ", ".join(f"{src} {human_bytes(n)}" for src, n in
                       sorted(self.bytes_by_source.items(), key=lambda kv: -kv[1]))
        resumed = f", {human_bytes(self.resumed_bytes)} resumed" if self.resumed_bytes else ""
        return (f"done: {self.path}  {human_bytes(self.size)} in {self.seconds:.1f} s "
                f"({human_bytes(self.rate)}/s){resumed}; by machine: {by or 'none'}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["rate"] = self.rate
        return d


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover
