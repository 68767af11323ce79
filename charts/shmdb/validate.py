#!/usr/bin/env python3
"""Validates Kubernetes objects offline against the Kubernetes OpenAPI schema.

Every object in the given multi-document YAML files (or stdin) is checked against the
definition the API server would use for its apiVersion/kind: built-in kinds against the
OpenAPI v2 spec that ships with Kubernetes (`api/openapi-spec/swagger.json`), custom kinds
against the `openAPIV3Schema` of the CRDs passed with --crd. Validation is strict: a field
the schema does not know is an error (as `kubectl apply --validate=strict` and server-side
field validation treat it), and an object whose kind no schema describes is an error too.

Usage: validate.py --swagger swagger.json [--crd crd.yaml ...] [files ...]
"""

import argparse
import copy
import json
import sys

import jsonschema
import yaml

INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
QUANTITY = {"anyOf": [{"type": "number"}, {"type": "string"}]}


SCHEMA_MAPS = ("properties", "patternProperties", "definitions")
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
SCHEMAS = ("items", "additionalProperties", "not")


def strict(schema):
    """Rejects unknown fields: objects with listed properties get additionalProperties: false.

    Only keywords in schema position are walked, so a field that happens to be named like a
    keyword (JSONSchemaProps has fields `type`, `properties`, ...) is left alone.
    """
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: strict(s) for name, s in value.items()}
        elif key in SCHEMA_LISTS and isinstance(value, list):
            out[key] = [strict(s) for s in value]
        elif key in SCHEMAS and isinstance(value, dict):
            out[key] = strict(value)
        elif key == "items" and isinstance(value, list):
            out[key] = [strict(s) for s in value]
        else:
            out[key] = value
    if out.get("x-kubernetes-int-or-string") is True:
        out.pop("type", None)
        out.pop("anyOf", None)
        out.update(copy.deepcopy(INT_OR_STRING))
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and out.get("x-kubernetes-preserve-unknown-fields") is not True
    ):
        out["additionalProperties"] = False
    return out


def swagger_definitions(path):
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    defs = {}
    for name, schema in spec["definitions"].items():
        if schema.get("format") == "int-or-string":
            defs[name] = copy.deepcopy(INT_OR_STRING)
        elif name.endswith("pkg.api.resource.Quantity"):
            defs[name] = copy.deepcopy(QUANTITY)
        else:
            defs[name] = strict(schema)
    by_gvk = {}
    for name, schema in spec["definitions"].items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            group = gvk.get("group", "")
            api_version = f"{group}/{gvk['version']}" if group else gvk["version"]
            by_gvk[(api_version, gvk["kind"])] = name
    return defs, by_gvk


def crd_schemas(paths, object_meta):
    schemas = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for version in spec["versions"]:
                    schema = strict(version["schema"]["openAPIV3Schema"])
                    props = schema.setdefault("properties", {})
                    props["metadata"] = object_meta
                    props.setdefault("apiVersion", {"type": "string"})
                    props.setdefault("kind", {"type": "string"})
                    api_version = f"{spec['group']}/{version['name']}"
                    schemas[(api_version, spec["names"]["kind"])] = schema
    return schemas


def documents(paths):
    streams = [(p, open(p, encoding="utf-8")) for p in paths] or [("<stdin>", sys.stdin)]
    for name, stream in streams:
        for index, doc in enumerate(yaml.safe_load_all(stream)):
            if doc:
                yield f"{name}#{index}", doc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swagger", required=True, help="Kubernetes api/openapi-spec/swagger.json")
    parser.add_argument("--crd", action="append", default=[], help="CRD YAML for custom kinds")
    parser.add_argument("files", nargs="*", help="multi-document YAML (default: stdin)")
    args = parser.parse_args()

    defs, by_gvk = swagger_definitions(args.swagger)
    object_meta = {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    custom = crd_schemas(args.crd, object_meta)

    failures = 0
    passed = 0
    for where, obj in documents(args.files):
        key = (obj.get("apiVersion"), obj.get("kind"))
        label = f"{where} {key[1]}/{(obj.get('metadata') or {}).get('name')}"
        if key in by_gvk:
            schema = {"$ref": f"#/definitions/{by_gvk[key]}", "definitions": defs}
        elif key in custom:
            schema = dict(custom[key], definitions=defs)
        else:
            print(f"FAIL {label}: no schema for apiVersion {key[0]} kind {key[1]}")
            failures += 1
            continue
        errors = sorted(
            jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.path)
        )
        if errors:
            failures += 1
            for error in errors:
                path = "/".join(str(p) for p in error.absolute_path)
                print(f"FAIL {label}: {path}: {error.message}")
        else:
            passed += 1
            print(f"ok   {label}")
    print(f"{passed} passed, {failures} failed")
    return 1 if failures or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
