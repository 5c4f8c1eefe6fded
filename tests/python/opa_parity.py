"""The bundled policies behave the same under real OPA (v1.20.2, embedded by the PyPI package
opa-golib-python-bindings) as under Cordon's regorus VM and interpreter.

Usage: opa_parity.py CORDON_BINARY POLICY_DIR INPUT_DIR

For every input document: OPA's data.cordon.main.decision equals Cordon's (reasons compared as a
set, since both engines build them from sets). For every test_* rule: the same pass/fail. Every
input is valid against policies/schema/input.schema.json and every decision against
decision.schema.json. Exits non-zero with a list of differences.
"""

import json
import pathlib
import re
import subprocess
import sys

import jsonschema
from opa_bindings import OpaEngine, OpaUndefinedError


def load_bundle(engine: OpaEngine, root: pathlib.Path) -> list[tuple[str, str]]:
    tests = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.suffix == ".rego":
            source = path.read_text()
            engine.add_policy(rel, source)
            if rel.endswith("_test.rego"):
                package = re.search(r"(?m)^\s*package\s+([A-Za-z0-9_.]+)", source).group(1)
                for name in dict.fromkeys(re.findall(r"(?m)^(test_[A-Za-z0-9_]*)\b", source)):
                    tests.append((f"data.{package}.{name}", rel))
        elif path.name == "data.json":
            prefix = ".".join(path.relative_to(root).parts[:-1])
            engine.add_data(json.loads(path.read_text()), prefix)
    return tests


def canonical(decision):
    if not isinstance(decision, dict):
        return decision
    d = dict(decision)
    if isinstance(d.get("reasons"), list):
        d["reasons"] = sorted(d["reasons"], key=lambda r: json.dumps(r, sort_keys=True))
    return json.loads(json.dumps(d, sort_keys=True))


def main() -> int:
    cordon, policy_dir, input_dir = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
    schema_dir = policy_dir / "schema"
    input_schema = json.loads((schema_dir / "input.schema.json").read_text())
    decision_schema = json.loads((schema_dir / "decision.schema.json").read_text())
    problems = []

    engine = OpaEngine()
    tests = load_bundle(engine, policy_dir)

    inputs = sorted(input_dir.glob("*.json"))
    assert inputs, f"no inputs in {input_dir}"
    out = subprocess.run(
        [cordon, "policy", "eval", "--dir", str(policy_dir)] + sum((["--input", str(p)] for p in inputs), []),
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()
    cordon_decisions = {json.loads(line)["input"]: json.loads(line) for line in out}

    for path in inputs:
        doc = json.loads(path.read_text())
        try:
            jsonschema.validate(doc, input_schema)
        except jsonschema.ValidationError as e:
            problems.append(f"{path.name}: input does not match input.schema.json: {e.message}")
        try:
            opa = engine.eval_document("cordon.main.decision", doc)
        except OpaUndefinedError:
            opa = None
        ours = cordon_decisions[str(path)]
        if canonical(opa) != canonical(ours["decision"]):
            problems.append(f"{path.name}: OPA {json.dumps(canonical(opa))}\n  cordon {json.dumps(canonical(ours['decision']))}")
        try:
            jsonschema.validate(ours["decision"], decision_schema)
        except jsonschema.ValidationError as e:
            problems.append(f"{path.name}: decision does not match decision.schema.json: {e.message}")
        if ours["enforced"]["reasons"] and ours["enforced"]["reasons"][0]["code"] == "policy_error":
            problems.append(f"{path.name}: cordon could not decide: {ours['enforced']['reasons'][0]['message']}")

    report = json.loads(subprocess.run(
        [cordon, "policy", "test", "--json", str(policy_dir)], capture_output=True, text=True,
    ).stdout)
    ours = {r["name"]: r["outcome"] == "pass" for r in report["results"]}
    for name, _file in tests:
        try:
            passed = engine.eval_query(name) != []
        except Exception as e:  # an error in OPA is a failed test, as in `opa test`
            print(f"OPA error in {name}: {e}", file=sys.stderr)
            passed = False
        if ours.get(name) != passed:
            problems.append(f"{name}: OPA {'pass' if passed else 'fail'}, cordon {ours.get(name)}")
    if set(ours) != {n for n, _ in tests}:
        problems.append(f"test sets differ: {sorted(set(ours) ^ {n for n, _ in tests})}")

    print(f"{len(inputs)} inputs, {len(tests)} tests compared with OPA")
    for p in problems:
        print("DIFFERENCE:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
