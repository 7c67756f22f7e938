#!/usr/bin/env python3
"""Checks Serverless Devs s.yaml files against the props this project uses, offline.

For each file given:
  * it is YAML (anchors allowed) with `edition: 3.0.0` and fc3 resources;
  * after rendering its template expressions, every key is one that tools/s_yaml_props.json
    lists, with the right type, range or enum value, and every trigger's triggerConfig has the
    keys of its own triggerType. fc3's own schema lets unknown keys through (`timout: 60`
    validates there, and FC silently keeps its 3 s default); this check rejects them.

Expressions are rendered as `s` renders them, with test values: `${vars.NAME}` from the file's
`vars`, `${env('NAME', 'default')}` as its default (or the variable when set and no default is
given), `${config('AccountID')}` as a fixed test account id, `${path('x')}` as the path. A value
that is one whole expression keeps the type it renders to (`memorySize: ${vars.memory}` is
checked as a number). Keys are not rendered (action names such as `pre-${regex('deploy|local')}`).

Usage: tools/validate_s_yaml.py [--fc3-schema FILE] S_YAML...
  --fc3-schema FILE   also validate each fc3 resource's props against fc3's full JSON schema
                      (devsapp/fc3 src/schema.json); needs the Python package jsonschema
Exit status: 0 all valid, 1 some file invalid, 2 cannot run (missing module or file).
Needs Python 3.8+ and PyYAML (`apt install python3-yaml` or `pip install pyyaml`).
"""

import argparse
import difflib
import json
import os
import re
import sys
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    print("validate_s_yaml: needs PyYAML: `apt install python3-yaml` or `pip install pyyaml`",
          file=sys.stderr)
    sys.exit(2)

DESCRIPTION = Path(__file__).resolve().parent / "s_yaml_props.json"
TEST_CONFIG = {"AccountID": "1234567890123456"}
EXPRESSION = re.compile(r"\$\{([^}]*)\}")
ENV_CALL = re.compile(r"""^env\(\s*['"]([^'"]+)['"]\s*(?:,\s*['"]([^'"]*)['"]\s*)?\)$""")
CONFIG_CALL = re.compile(r"""^config\(\s*['"]([^'"]+)['"]\s*\)$""")
PATH_CALL = re.compile(r"""^path\(\s*['"]([^'"]*)['"]\s*\)$""")
TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
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
    """`value` with every expression in its strings rendered, recursively (keys untouched)."""
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


class Checker:
    """Validates values against the JSON-Schema subset of tools/s_yaml_props.json."""

    def __init__(self, description):
        self.root = description
        self.problems = []

    def resolve(self, schema):
        while "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = self.root["definitions"][name]
        return schema

    def fail(self, where, message):
        self.problems.append(f"{where or '(top level)'}: {message}")

    def check(self, value, schema, where):
        """Appends to self.problems what is wrong with `value`; True when nothing is."""
        before = len(self.problems)
        schema = self.resolve(schema)
        if "anyOf" in schema:
            self.check_any_of(value, schema["anyOf"], where)
        elif "const" in schema:
            if value != schema["const"]:
                self.fail(where, f"{value!r} must be {schema['const']!r}")
        elif "enum" in schema:
            if value not in schema["enum"] or isinstance(value, bool):
                self.fail(where, f"{value!r} is not one of {schema['enum']}")
        elif "type" in schema and self.check_type(value, schema["type"], where):
            self.check_range(value, schema, where)
            if isinstance(value, dict):
                self.check_object(value, schema, where)
            elif isinstance(value, list) and "items" in schema:
                for index, item in enumerate(value):
                    self.check(item, schema["items"], f"{where}[{index}]")
        return len(self.problems) == before

    def check_any_of(self, value, options, where):
        for option in options:
            trial = Checker(self.root)
            if trial.check(value, option, where):
                return
        self.fail(where, f"{value!r} matches none of the allowed forms")

    def check_type(self, value, expected, where):
        if expected == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif expected == "number":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, TYPES[expected])
        if not ok:
            self.fail(where, f"{value!r} is not of type {expected} (is {type(value).__name__})")
        return ok

    def check_range(self, value, schema, where):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        if "minimum" in schema and value < schema["minimum"]:
            self.fail(where, f"{value} is less than the minimum of {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            self.fail(where, f"{value} is more than the maximum of {schema['maximum']}")
        if "multipleOf" in schema and value % schema["multipleOf"] != 0:
            self.fail(where, f"{value} is not a multiple of {schema['multipleOf']}")

    def check_object(self, value, schema, where):
        properties = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        extra = schema.get("additionalProperties", True)
        for name in schema.get("required", []):
            if name not in value:
                self.fail(where, f"required key {name!r} is missing")
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if key in properties:
                self.check(item, properties[key], path)
                continue
            pattern = next((p for p in patterns if re.fullmatch(p, str(key))), None)
            if pattern is not None:
                self.check(item, patterns[pattern], path)
            elif extra is False:
                hint = difflib.get_close_matches(str(key), list(properties), n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.fail(path, f"unknown key{suggestion}; known here: {sorted(properties)}")
            elif isinstance(extra, dict):
                self.check(item, extra, path)
        by_type = schema.get("x-by-trigger-type")
        if by_type and value.get("triggerType") in by_type:
            self.check(value.get("triggerConfig"), by_type[value["triggerType"]],
                       f"{where}.triggerConfig")


def load(path):
    """(rendered document, []) or (None, problems)."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        return None, [f"cannot read YAML: {error}"]
    if not isinstance(document, dict):
        return None, ["top level is not a mapping"]
    try:
        return render_document(document), []
    except RenderError as error:
        return None, [str(error)]


def fc3_schema_problems(document, schema_path):
    """Problems of each fc3 resource's props against fc3's full schema (jsonschema)."""
    try:
        import jsonschema
    except ImportError:
        print("validate_s_yaml: --fc3-schema needs jsonschema: `pip install jsonschema`",
              file=sys.stderr)
        sys.exit(2)
    schema = json.loads(Path(schema_path).read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    problems = []
    for name, resource in (document.get("resources") or {}).items():
        props = resource.get("props") if isinstance(resource, dict) else None
        for error in sorted(validator.iter_errors(props), key=str):
            where = "/".join(str(p) for p in error.absolute_path) or "(props)"
            problems.append(f"resources.{name}.props/{where}: {error.message} (fc3 schema)")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fc3-schema", type=Path,
                        help="also validate props against this copy of fc3's src/schema.json")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    description = json.loads(DESCRIPTION.read_text(encoding="utf-8"))
    if args.fc3_schema is not None and not args.fc3_schema.is_file():
        print(f"validate_s_yaml: {args.fc3_schema}: no such file", file=sys.stderr)
        return 2
    failed = False
    for path in args.files:
        if not path.is_file():
            print(f"validate_s_yaml: {path}: no such file", file=sys.stderr)
            return 2
        document, problems = load(path)
        if document is not None:
            checker = Checker(description)
            checker.check(document, description, "")
            problems = checker.problems
            if args.fc3_schema is not None:
                problems += fc3_schema_problems(document, args.fc3_schema)
        for problem in problems:
            print(f"{path}: {problem}")
        if not problems:
            print(f"{path}: valid ({DESCRIPTION.name}"
                  f"{' and ' + args.fc3_schema.name if args.fc3_schema else ''})")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
