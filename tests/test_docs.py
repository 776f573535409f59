"""Docs that stand on their own (issue 11 point 6): the configuration reference
is generated from the models and up to date, the README and docs point only at
files of this repository, and no tracked file names a development machine's
paths or anything beside the checkout."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from gateway import configdoc

ROOT = Path(__file__).resolve().parents[1]
# Written in pieces so that this file does not name what it looks for.
FORBIDDEN = [re.escape(".." + "/shared"), re.escape("shared" + "/hw"), "/" + "work/", "/" + "root/",
             r"/home/[a-z_][a-z0-9_-]*/", re.escape("/tmp/" + "pytest-of")]


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    out = []
    for name in names:
        path = ROOT / name
        if path.is_file() and b"\0" not in path.read_bytes()[:4096]:
            out.append(path)
    return out


def test_the_configuration_reference_is_up_to_date():
    assert (ROOT / "docs/configuration.md").read_text() == configdoc.render(), \
        "regenerate it: .venv/bin/python -m gateway.configdoc > docs/configuration.md"


def test_no_tracked_file_names_a_path_outside_the_repository():
    pattern = re.compile("|".join(FORBIDDEN))
    found = []
    for path in tracked_text_files():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert found == []


def test_the_grep_would_catch_one():
    pattern = re.compile("|".join(FORBIDDEN))
    for line in ("see ../" "shared/SPEC.md", "/ho" "me/alice/src", "/tmp/py" "test-of-root/x", "/wo" "rk/main"):
        assert pattern.search(line), line
    assert not pattern.search("root:x:0:0:root:/root:/bin/bash")  # an /etc/passwd line in a test is fine


def test_readme_and_docs_link_only_to_files_that_exist():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)} links to {target}"
        for target in re.findall(r"`((?:docs|drivers|config|systemd|scripts|hil|gateway|tests)/[\w./-]+)`",
                                 doc.read_text()):
            if "<" not in target and "*" not in target:
                assert (ROOT / target).exists(), f"{doc.relative_to(ROOT)} names {target}"


def test_the_reference_docs_are_there():
    for name in ("configuration", "readings-and-topics", "delivery", "ngsi-ld-mapping", "field-guide"):
        assert (ROOT / "docs" / f"{name}.md").stat().st_size > 1000, name
