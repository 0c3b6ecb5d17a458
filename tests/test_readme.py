"""The README's tour runs as written, on a fresh stack, and every command in it shows the output
it produces: the same statuses, fields and values, save for ids, times and versions.

Each `sh` block of the tour is run in order by one bash (its variables carry over, as in a
terminal), once every job of the one before is final, as a reader's pace leaves it. The block
shown right after it is its output. A JSON output must match field for field: `...` in an object
stands for fields not shown, and a string ending in `...` for any string. An HTTP answer must
have the status shown and the headers shown, and its body matches as JSON. Other text matches
line for line, in any order; a line `...` stands for lines not shown.
"""

import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import OwnStack
from tests.stack import ROOT, TOKEN, scalar, wait_until

pytestmark = pytest.mark.slow

README_URL = "http://127.0.0.1:8000"
ELIDED = "..."
# What differs from one run to the next, as the README says: ids, times, versions, cursors.
VARYING = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"agt_[0-9A-Za-z]{12}"), "<agent id>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00"), "<time>"),
    (re.compile(r"\b\d{16}\b"), "<version>"),
    (re.compile(r'"Wy[\w-]{30,}"'), '"<cursor>"'),  # base64 of a JSON list
    # Latency depends on the machine: its buckets, count and sum.
    (re.compile(r"^(idmirror_job_latency_seconds\S*) \S+$"), r"\1 <value>"),
]


def masked(text: str) -> str:
    for pattern, replacement in VARYING:
        text = pattern.sub(replacement, text)
    return text


@dataclass
class Example:
    line: int  # where the command starts in the README
    command: str
    shown: str
    language: str


def tour() -> list[Example]:
    """The commands of the README's tour (all but `make run`) with the output shown for each."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## A five-minute tour")
    section = readme[start : readme.index("\n## ", start + 1)]
    blocks = list(re.finditer(r"^```(\w*)\n(.*?)^```\n", section, re.MULTILINE | re.DOTALL))
    first = readme[:start].count("\n")
    examples = []
    followers: list[re.Match[str] | None] = [*blocks[1:], None]
    for block, after in zip(blocks, followers, strict=True):
        if block.group(1) != "sh" or block.group(2).strip() == "make run":
            continue
        line = first + section[: block.start()].count("\n") + 2
        adjacent = after is not None and not section[block.end() : after.start()].strip()
        assert after and adjacent and after.group(1) != "sh", f"README.md:{line} shows no output"
        examples.append(Example(line, block.group(2), after.group(2), after.group(1)))
    return examples


def run_in_order(examples: list[Example], base_url: str, database_url: str) -> list[str]:
    """Each command's output, the commands run by one bash; a command starts once no job is
    pending."""
    outputs: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as db:

        def settled() -> bool:
            return bool(scalar(db, "SELECT count(*) FROM jobs WHERE status = 'pending'") == 0)

        shell = subprocess.Popen(
            ["bash"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "IDMIRROR_TOKEN": TOKEN},
        )
        assert shell.stdin is not None and shell.stdout is not None
        for example in examples:
            wait_until(settled, timeout=15)
            command = example.command.replace(README_URL, base_url)
            shell.stdin.write(f"{command}\necho; echo '<<end>>'\n")
            shell.stdin.flush()
            lines = iter(shell.stdout.readline, "<<end>>\n")
            outputs.append("".join(lines).replace("\r\n", "\n"))
        shell.stdin.close()
        shell.wait(10)
    return outputs


def json_mismatches(shown: Any, actual: Any, where: str = "$") -> list[str]:
    """Where `actual` differs from what the README shows."""
    if isinstance(shown, dict) and isinstance(actual, dict):
        names = set(shown) - {ELIDED}
        found = [] if ELIDED in shown or set(actual) == names else [f"{where}: {sorted(actual)}"]
        for name in sorted(names):
            found += json_mismatches(shown[name], actual.get(name, "<absent>"), f"{where}.{name}")
        return found
    if isinstance(shown, list) and isinstance(actual, list) and len(shown) == len(actual):
        return [
            m
            for i, (s, a) in enumerate(zip(shown, actual, strict=True))
            for m in json_mismatches(s, a, f"{where}[{i}]")
        ]
    if isinstance(shown, str) and shown.endswith(ELIDED) and isinstance(actual, str):
        return []
    if masked(json.dumps(shown)) == masked(json.dumps(actual)):
        return []
    return [f"{where}: shown {shown!r}, got {actual!r}"]


def shown_json(text: str) -> Any:
    """The README's JSON, where `...` among an object's fields stands for those not shown."""
    return json.loads(re.sub(r",\s*\.\.\.\s*}", f', "{ELIDED}": true}}', text))


def http_mismatches(shown: str, actual: str) -> list[str]:
    """An HTTP answer (or several, as printed by `curl -i`): statuses, the headers shown, and
    the body as JSON."""
    shown_head, _, shown_body = shown.partition("\n\n")
    head, _, body = actual.partition("\n\n")
    lines = [masked(line) for line in head.splitlines()]
    headers = {line.split(":")[0].lower(): line.lower() for line in lines[1:]}
    found = []
    for i, line in enumerate(masked(shown_head).splitlines()):
        if line.startswith("HTTP/") and i == 0 and line != lines[0]:
            found.append(f"status: shown {line!r}, got {lines[0]!r}")
        elif i > 0 and headers.get(line.split(":")[0].lower()) != line.lower():
            found.append(f"header: shown {line!r}, got {sorted(headers.values())}")
    if shown_body.strip():
        found += json_mismatches(shown_json(shown_body), json.loads(body))
    return found


def text_mismatches(shown: str, actual: str) -> list[str]:
    """The lines, in any order; `...` stands for more lines that start as the one before it
    does (up to its first `{` or space), which are then not compared."""
    shown_lines = [masked(line) for line in shown.strip().splitlines()]
    elided = tuple(
        re.split(r"[{ ]", before)[0]
        for before, line in zip(shown_lines, shown_lines[1:], strict=False)
        if line == ELIDED
    )

    def compared(lines: list[str]) -> Counter[str]:
        return Counter(line for line in lines if line != ELIDED and not line.startswith(elided))

    expected = compared(shown_lines)
    got = compared([masked(line) for line in actual.strip().splitlines()])
    return [] if expected == got else [f"shown {sorted(expected)}, got {sorted(got)}"]


def mismatches(example: Example, actual: str) -> list[str]:
    if example.language == "json":
        try:
            return json_mismatches(shown_json(example.shown), json.loads(actual))
        except json.JSONDecodeError as exc:
            return [f"not one JSON document ({exc}): {actual}"]
    if example.shown.startswith("HTTP/") and example.shown.count("HTTP/") == 1:
        return http_mismatches(example.shown, actual)
    return text_mismatches(example.shown, actual)


def test_the_tour_shows_what_each_command_prints(own_stack: OwnStack) -> None:
    stack = own_stack("api", "worker", "beat")
    examples = tour()
    assert len(examples) >= 10
    outputs = run_in_order(examples, stack.base_url, stack.database_url)
    wrong = {
        f"README.md:{example.line}": found
        for example, output in zip(examples, outputs, strict=True)
        if (found := mismatches(example, output))
    }
    assert not wrong, "\n".join(
        f"{where}: {problem}" for where, p in wrong.items() for problem in p
    )
