#!/usr/bin/env python3
"""Validates Serverless Devs s.yaml files offline against the fc3 component's props schema.

What it checks, for each file given:
  * the file is YAML with `edition: 3.0.0` and a non-empty `resources` map;
  * every resource whose `component` is fc3 has `props` that validate (JSON Schema draft-07)
    against the fc3 schema (devsapp/fc3 src/schema.json; a copy lives in
    ../shared/reference/fc3-schema.json beside the checkout in CI).

Template expressions are rendered first with test values, as `s` would render them:
`${vars.NAME}` from the file's `vars`, `${env('NAME', 'default')}` as its default (or the
environment variable when set and no default is given), `${config('AccountID')}` as a fixed test
account id, `${path('x')}` as the path itself. A value that is a single expression keeps the type
of what it renders to (so `memorySize: ${vars.memory}` is checked as a number).

Usage: tools/validate_s_yaml.py [--schema FILE] S_YAML...
       tools/validate_s_yaml.py --locate      (print the schema path it would use)
The schema defaults to $FC3_SCHEMA, else ../shared/reference/fc3-schema.json beside the checkout.
Exit status: 0 all valid, 1 some file invalid, 2 cannot run (missing schema, module or file).
Needs the Python packages jsonschema and pyyaml (`pip install jsonschema pyyaml`).
"""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

try:
    import jsonschema
    import yaml
except ImportError as missing:  # pragma: no cover - depends on the machine
    print(f"validate_s_yaml: {missing}; run `pip install jsonschema pyyaml`", file=sys.stderr)
    sys.exit(2)

REPO = Path(__file__).resolve().parent.parent
SCHEMA_IN_SHARED = Path("shared") / "reference" / "fc3-schema.json"
TEST_CONFIG = {"AccountID": "1234567890123456"}
EXPRESSION = re.compile(r"\$\{([^}]*)\}")
ENV_CALL = re.compile(r"""^env\(\s*['"]([^'"]+)['"]\s*(?:,\s*['"]([^'"]*)['"]\s*)?\)$""")
CONFIG_CALL = re.compile(r"""^config\(\s*['"]([^'"]+)['"]\s*\)$""")
PATH_CALL = re.compile(r"""^path\(\s*['"]([^'"]*)['"]\s*\)$""")
# The schema's ITrigger.triggerConfig is an anyOf of every trigger kind, so a misspelt OSS event
# passes as, say, an EventBridge config. Each trigger is therefore also checked against the
# definition of its own triggerType (type names: the schema's ITriggerType enum).
TRIGGER_DEFINITIONS = {
    "oss": "IOssTriggerConfig",
    "http": "IHttpTriggerConfig",
    "timer": "ITimerTriggerConfig",
    "log": "ILogTriggerConfig",
    "mns_topic": "IMnsTriggerConfig",
    "cdn_events": "ICdnTriggerConfig",
    "tablestore": "IOtsConfig",
    "eventbridge": "IEventBridge",
}


class RenderError(Exception):
    """A template expression that cannot be rendered."""


def evaluate(expr, variables):
    """Value of one `${...}` expression."""
    expr = expr.strip()
    if expr.startswith("vars."):
        name = expr[len("vars."):]
        if name not in variables:
            raise RenderError(f"${{{expr}}}: no such entry in vars")
        return variables[name]
    match = ENV_CALL.match(expr)
    if match:
        name, default = match.groups()
        if default is not None:
            return default
        if name in os.environ:
            return os.environ[name]
        raise RenderError(f"${{{expr}}}: environment variable {name} is not set")
    match = CONFIG_CALL.match(expr)
    if match:
        if match.group(1) not in TEST_CONFIG:
            raise RenderError(f"${{{expr}}}: no test value for config {match.group(1)}")
        return TEST_CONFIG[match.group(1)]
    match = PATH_CALL.match(expr)
    if match:
        return match.group(1)
    raise RenderError(f"${{{expr}}}: unsupported expression")


def render(value, variables):
    """`value` with every expression in its strings rendered, recursively."""
    if isinstance(value, dict):
        return {key: render(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, variables) for item in value]
    if not isinstance(value, str):
        return value
    whole = EXPRESSION.fullmatch(value.strip())
    if whole:
        return evaluate(whole.group(1), variables)
    return EXPRESSION.sub(lambda m: str(evaluate(m.group(1), variables)), value)


def render_document(document):
    """The document with `vars` rendered first (they may use env()), then everything else."""
    variables = render(document.get("vars") or {}, {})
    return render(document, variables)


def trigger_problems(props, schema, name):
    """Problems of each trigger's config against the definition of its own trigger type."""
    problems = []
    triggers = props.get("triggers") if isinstance(props, dict) else None
    for index, trigger in enumerate(triggers if isinstance(triggers, list) else []):
        if not isinstance(trigger, dict):
            continue
        definition = TRIGGER_DEFINITIONS.get(trigger.get("triggerType"))
        if definition is None:
            continue
        sub = {"$ref": f"#/definitions/{definition}", "definitions": schema["definitions"]}
        for error in jsonschema.Draft7Validator(sub).iter_errors(trigger.get("triggerConfig")):
            where = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"resources.{name}.props/triggers/{index}/triggerConfig/{where}: "
                            f"{error.message} (as {definition})")
    return problems


def check_file(path, validator):
    """List of problems found in one s.yaml (empty when valid)."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        return [f"cannot read YAML: {error}"]
    if not isinstance(document, dict):
        return ["top level is not a mapping"]
    try:
        document = render_document(document)
    except RenderError as error:
        return [str(error)]
    problems = []
    if str(document.get("edition")) != "3.0.0":
        problems.append(f"edition is {document.get('edition')!r}, expected '3.0.0'")
    resources = document.get("resources")
    if not isinstance(resources, dict) or not resources:
        return problems + ["no resources"]
    for name, resource in resources.items():
        if not isinstance(resource, dict) or resource.get("component") != "fc3":
            problems.append(f"resources.{name}: component is not fc3")
            continue
        for error in sorted(validator.iter_errors(resource.get("props")), key=str):
            where = "/".join(str(p) for p in error.absolute_path) or "(props)"
            problems.append(f"resources.{name}.props/{where}: {error.message}")
        problems += trigger_problems(resource.get("props"), validator.schema, name)
    return problems


def default_schema():
    """$FC3_SCHEMA, else ../shared/reference/fc3-schema.json beside the checkout (for a git
    worktree, also beside the main checkout)."""
    if os.environ.get("FC3_SCHEMA"):
        return Path(os.environ["FC3_SCHEMA"])
    candidates = [REPO.parent / SCHEMA_IN_SHARED]
    try:
        common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                cwd=REPO, capture_output=True, text=True, check=True).stdout
        candidates.append(Path(common.strip()).parent.parent / SCHEMA_IN_SHARED)
    except (OSError, subprocess.CalledProcessError):
        pass
    return next((c for c in candidates if c.is_file()), candidates[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", type=Path, default=default_schema())
    parser.add_argument("--locate", action="store_true",
                        help="only print the schema path; exit 2 when it does not exist")
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args()
    if not args.schema.is_file():
        print(f"validate_s_yaml: schema {args.schema} not found", file=sys.stderr)
        return 2
    if args.locate:
        print(args.schema)
        return 0
    if not args.files:
        parser.error("no s.yaml given")
    schema = json.loads(args.schema.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    failed = False
    for path in args.files:
        if not path.is_file():
            print(f"validate_s_yaml: {path}: no such file", file=sys.stderr)
            return 2
        problems = check_file(path, validator)
        for problem in problems:
            print(f"{path}: {problem}")
        if not problems:
            print(f"{path}: valid against {args.schema.name}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
