"""docs/configuration.md, generated from the config models themselves, so the
reference cannot drift from what `gateway check` accepts
(tests/test_docs.py fails when the file is out of date).

    python -m gateway.configdoc > docs/configuration.md
"""

from __future__ import annotations

import sys

from pydantic import BaseModel

from gateway import registry
from gateway.keydoc import key_rows

INTRO = """# Configuration reference

Generated from the config models by `python -m gateway.configdoc > docs/configuration.md`; a test fails when it
is out of date. One YAML file (`-c FILE`, default `$GATEWAY_CONFIG`, then `/etc/city-edge-gateway/gateway.yaml`)
with the sections below. `gateway check -c FILE` validates it and prints every problem as
`FILE:LINE: key.path: message`; unknown keys are errors, so a typo never passes silently.

Types: a *duration* is a positive number with `ms`, `s`, `m` or `h` and no space (`500ms`, `10s`, `1.5m`); a
*name* is 1 to 64 characters `a-z`, `0-9`, `-`; *[lat, lon]* is WGS84 degrees; a *secret file* is a file whose
content is the secret (secrets never stand in the config); a *file* must exist and be readable when checked.
Secrets can live at `/run/credentials/city-edge-gateway.service/secret_<name>`: see the field guide.
"""


def _table(model: type[BaseModel], skip: set[str] = frozenset()) -> str:
    rows = key_rows(model, skip)
    if not rows:
        return "(no keys of its own)\n"
    out = ["| key | type | default | what |", "| --- | --- | --- | --- |"]
    for key, kind, default, what in rows:
        cells = [f"`{key}`", kind.replace("|", "\\|"), default.replace("|", "\\|"), what.replace("|", "\\|")]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _doc(model: type) -> str:
    text = (model.__doc__ or "").strip()
    return " ".join(text.split()) + "\n\n" if text and not text.startswith("Usage docs") else ""


def render() -> str:
    from gateway.config import (UPLINK_TYPES, GatewaySection, ServiceSection, StorageSection, WebSection)
    from gateway.pipeline_options import DistanceRules
    from gateway.sdk import SensorOptions
    parts = [INTRO]
    parts += ["\n## gateway\n\nRequired. `id` appears in topics, reading ids and entity ids; `location` is the "
              "default of every sensor; `shutdown_timeout` is how long the daemon keeps delivering after SIGTERM.\n\n",
              _table(GatewaySection)]
    parts += ["\n## storage\n\nThe buffer: one SQLite file that holds every reading until each uplink has it. "
              "`max_readings` bounds it (the oldest readings that are not alerts go first, counted and logged); "
              "`durability: full` makes every commit wait for the SD card; `commit_interval` and `commit_rows` "
              "group the appends into few writes.\n\n", _table(StorageSection)]
    parts += ["\n## service\n\n", _doc(ServiceSection), _table(ServiceSection)]
    parts += ["\n### service.web\n\n", _doc(WebSection), _table(WebSection)]
    parts.append("\n## uplinks\n\nA list; every reading goes to every uplink. Each item has `name` (a name, unique) "
                 "and `type`, then the keys of its type.\n")
    for kind, model in UPLINK_TYPES.items():
        parts += [f"\n### type: {kind}\n\n", _doc(model), _table(model, {"name", "type"})]
    parts.append("\n## sensors\n\nA list. Every sensor has these keys, then those of its driver "
                 "(`gateway drivers` lists the installed ones, plugins included).\n\n")
    parts.append(_table(SensorOptions))
    parts += ["\n### distance sensors: the pipeline's keys\n\nA river-level or snow-depth sensor (every driver "
              "below with a `kind` key) also takes these; the pipeline derives levels, stages and snowfall with them "
              "(see docs/river-and-snow.md).\n\n", _table(DistanceRules)]
    base = set(SensorOptions.model_fields)
    for name, target in sorted(registry.available().items()):
        if not target.startswith("drivers."):
            continue  # plugins and the simulated drivers document themselves
        cls = registry.load(name)
        parts += [f"\n### driver: {name}\n\n", f"{cls.summary}. See `drivers/{name}/README.md`.\n\n"
                  if cls.summary else "", _table(cls.Options, base)]
    return "".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())
