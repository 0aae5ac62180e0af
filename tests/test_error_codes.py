"""The error-code registry: every code netdsl can print is in netdsl.errors.CODES, with one meaning,
and docs/errors.md is what the registry generates."""
import re
import subprocess
import sys
from pathlib import Path

from netdsl.errors import CODES, markdown

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "netdsl"
# a code as Python code writes it: "E103" or 'E103' in source, [E007] inside a message; W-codes are warnings
CODE = re.compile(r"""["'\[]([EW]\d{3})["'\]]""")


def used_codes() -> dict:
    """code -> the files under netdsl/ that use it (Python sources and templates)."""
    out: dict = {}
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix not in (".py", ".j2") or not path.is_file():
            continue
        if path == PACKAGE / "errors.py":
            continue  # the registry itself
        for code in CODE.findall(path.read_text(encoding="utf-8")):
            out.setdefault(code, set()).add(str(path.relative_to(ROOT)))
    return out


def test_every_code_used_is_registered():
    used = used_codes()
    assert len(used) >= 40, "the scan found too few codes; has the way codes are written changed?"
    missing = {code: sorted(files) for code, files in used.items() if code not in CODES}
    assert not missing, f"register these codes in netdsl/errors.py CODES: {missing}"


def test_every_registered_code_is_used():
    unused = set(CODES) - set(used_codes())
    assert not unused, f"codes in CODES that nothing raises: {sorted(unused)}"


def test_codes_are_well_formed_and_meanings_distinct():
    assert all(re.fullmatch(r"[EW]\d{3}", c) for c in CODES)
    assert list(CODES) == sorted(CODES)
    meanings = list(CODES.values())
    assert len(set(meanings)) == len(meanings), "two codes with one meaning"
    assert all(m and "\n" not in m and "|" not in m for m in meanings)


def test_docs_errors_md_is_generated_from_the_registry():
    committed = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert committed == markdown(), "docs/errors.md is stale: run python -m netdsl.errors --markdown > docs/errors.md"


def test_markdown_command():
    proc = subprocess.run([sys.executable, "-m", "netdsl.errors", "--markdown"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == markdown()
    bad = subprocess.run([sys.executable, "-m", "netdsl.errors"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "usage" in bad.stderr
