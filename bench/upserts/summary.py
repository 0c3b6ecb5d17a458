"""How the upserts benchmark's reports sum up several rounds: a figure as its median and range,
a target as met in how many rounds."""

import statistics


def verdict(values: list[bool]) -> str:
    """Whether a target was met, in bold, with the rounds that met it when there were several."""
    if all(values):
        return "**met**" + (f" in all {len(values)} rounds" if len(values) > 1 else "")
    if not any(values):
        return "**not met**" + (f" in any of {len(values)} rounds" if len(values) > 1 else "")
    return f"**met in {sum(values)} of {len(values)} rounds**"


def span(values: list[float], digits: int = 0) -> str:
    """One value, or the median of several and their range."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    low, high = min(values), max(values)
    return f"{statistics.median(values):.{digits}f} (range {low:.{digits}f}-{high:.{digits}f})"
