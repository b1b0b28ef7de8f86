"""Offline oracle: validates a CycloneDX 1.6 JSON document against the strict 1.6 schema that
cyclonedx-python-lib ships (JsonStrictValidator: no unknown properties), with format checks.

    scripts/setup-python      # once: creates target/pyenv-attest
    target/pyenv-attest/bin/python tests/oracles/cyclonedx-validate.py FILE

Exit 0, printing "valid CycloneDX 1.6: FILE", when FILE is valid. Exit 1 when it is not (each
schema error on stderr as "JSON-PATH: message"), when it is not JSON, or when its specVersion
is not "1.6" (the schema itself accepts any string there). Exit 2 on bad usage or an unreadable
file.
"""

import json
import sys

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator


def bom_refs(node, path, found):
    """Collects (bom-ref, JSON path) for every object in node that carries a bom-ref."""
    if isinstance(node, dict):
        ref = node.get("bom-ref")
        if isinstance(ref, str):
            found.append((ref, path))
        for key, value in node.items():
            if key != "dependencies":
                bom_refs(value, f"{path}.{key}", found)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            bom_refs(value, f"{path}[{i}]", found)


def reference_problems(doc):
    problems = []
    found = []
    bom_refs(doc, "$", found)
    seen = {}
    for ref, path in found:
        if ref in seen:
            problems.append(f"{path}.bom-ref: {ref!r} is also the bom-ref of {seen[ref]}")
        else:
            seen[ref] = path
    for i, dep in enumerate(doc.get("dependencies") or []):
        if not isinstance(dep, dict):
            continue
        names = [("ref", dep.get("ref"))]
        names += [(f"dependsOn[{j}]", r) for j, r in enumerate(dep.get("dependsOn") or [])]
        for where, ref in names:
            if isinstance(ref, str) and ref not in seen:
                problems.append(f"$.dependencies[{i}].{where}: {ref!r} is no bom-ref in the document")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: cyclonedx-validate.py FILE", file=sys.stderr)
        return 2
    path = argv[1]
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        print(f"cyclonedx-validate: {err}", file=sys.stderr)
        return 2
    try:
        doc = json.loads(text)
    except ValueError as err:
        print(f"cyclonedx-validate: {path}: not JSON: {err}", file=sys.stderr)
        return 1
    problems = []
    if not isinstance(doc, dict) or doc.get("specVersion") != "1.6":
        got = doc.get("specVersion") if isinstance(doc, dict) else type(doc).__name__
        problems.append(f'$.specVersion: expected "1.6", got {got!r}')
    if isinstance(doc, dict):
        problems += reference_problems(doc)
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    for error in errors or ():
        detail = error.data
        where = getattr(detail, "json_path", None) or "$"
        message = getattr(detail, "message", None) or str(detail)
        problems.append(f"{where}: {message}")
    if problems:
        print(f"cyclonedx-validate: {path}: invalid CycloneDX 1.6:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"valid CycloneDX 1.6: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
