"""Resolve a genotype spec (a published name, a genotype.json, a run directory, or DARTS text) to a ``Genotype``.

Kept apart from ``genotype.py`` so that the published cells (data built from ``Genotype``) and the resolver
that looks them up import in one direction only.
"""

from __future__ import annotations

import re
from pathlib import Path

from lightning_nas.errors import GenotypeError
from lightning_nas.search_spaces.darts.genotype import Genotype
from lightning_nas.search_spaces.darts.published import PUBLISHED


def load_genotype(spec: str) -> Genotype:
    """Resolve ``spec``: a published name, a genotype.json, a run directory, or the DARTS text form."""
    spec = spec.strip()
    if spec in PUBLISHED:
        return PUBLISHED[spec]
    if spec.startswith("Genotype") or re.match(r"^\w+\s*=\s*Genotype", spec):
        return Genotype.from_text(spec, source="text")
    path = Path(spec)
    if path.is_dir():
        path = path / "genotype.json"
    if path.is_file():
        text = path.read_text()
        if text.lstrip().startswith("{"):
            return Genotype.from_json(text, source=str(path))
        return Genotype.from_text(text, source=str(path))
    raise GenotypeError(
        f"cannot resolve genotype {spec!r}: it is not a published name ({', '.join(sorted(PUBLISHED))}), "
        "not an existing genotype.json or run directory, and not DARTS text of the form Genotype(normal=[...], ...)"
    )
