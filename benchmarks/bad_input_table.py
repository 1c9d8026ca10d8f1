"""Print the table of docs/bad-input.md: every row of tests/test_bad_inputs.py and what ptm prints for it.

Builds the test's fixtures in a temporary directory, runs every row in this
process exactly as the test does, and prints one markdown line per row: the
input, the command (paths cut to their file name, ``...`` for the tiny-model
flags) and the message ptm printed (paths cut to their file name), or the
reason of a row the test lists as a known bug. A row that breaks the contract
(exit 2, one line, nothing written) without being a known bug, or a known bug
that no longer shows, is reported on stderr and nothing is written.

    python benchmarks/bad_input_table.py            # print the table
    python benchmarks/bad_input_table.py --write    # replace the table in docs/bad-input.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_bad_inputs as table  # noqa: E402


def build_table() -> tuple[list[str], list[str]]:
    """(the table's lines, header included; what is wrong with rows that misbehave)."""
    lines, problems = list(table.DOC_HEADER), []
    with tempfile.TemporaryDirectory(prefix="ptm-bad-input-") as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as under pytest, warnings are not part of what ptm prints
        with contextlib.redirect_stderr(io.StringIO()):  # the fixtures' own training logs
            paths = table.build_fixtures(Path(scratch) / "fixtures")
        for index, row in enumerate(table.ROWS):
            work = Path(scratch) / f"row-{index}"
            work.mkdir()
            before = table.fixture_state(paths["root"])
            code, err = table.run_row(row, paths, work)
            found = table.violations(row, code, err, paths, work, before)
            if found and row.id not in table.KNOWN_BUGS:
                problems.append(f"{row.id}: {'; '.join(found)}\n{err.rstrip()}")
            elif not found and row.id in table.KNOWN_BUGS:
                problems.append(f"{row.id}: listed in KNOWN_BUGS but keeps the contract now: remove it there")
            lines.append(table.doc_line(row, paths, err))
    return lines, problems


def write_doc(doc: Path, lines: list[str]) -> None:
    """Replace the table in ``doc``, keeping the text around it; written beside it, then renamed."""
    text = doc.read_text(encoding="utf-8")
    old = table.doc_table_lines(text)
    if not old:
        raise SystemExit(f"{doc}: no table starting with {table.DOC_HEADER[0]!r}")
    before, _, after = text.partition("\n".join(old))
    temporary = doc.with_name(doc.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(before + "\n".join(lines) + after)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"replace the table in {table.DOC} instead of printing it")
    args = parser.parse_args()
    lines, problems = build_table()
    if problems:
        print("rows that do not behave as the test expects:\n" + "\n".join(problems), file=sys.stderr)
        raise SystemExit(1)
    if args.write:
        write_doc(table.DOC, lines)
        print(f"{table.DOC}: {len(lines) - 2} rows", file=sys.stderr)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
