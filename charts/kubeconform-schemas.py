#!/usr/bin/env python3
"""Writes strict JSON schemas for kubeconform from local sources only (no network).

    kubeconform-schemas.py --swagger SWAGGER.json [--crd CRD.yaml ...] --out DIR

Layout (kubeconform's own naming, so `-schema-location 'DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json'`):
  DIR/_definitions.json             every definition of the Kubernetes swagger (OpenAPI v2), strict
  DIR/<kind>[-<group0>]-<ver>.json  one per group/version/kind: a $ref into _definitions.json
  DIR/<kind>-<group0>-<ver>.json    one per CRD version, from its openAPIV3Schema, strict

"Strict": every object schema with `properties` and no `additionalProperties` gets
`additionalProperties: false` (unless `x-kubernetes-preserve-unknown-fields`), so unknown fields
fail as on the API server. IntOrString and Quantity accept strings and numbers; `format` is
dropped (Kubernetes' formats such as int-or-string are not JSON Schema formats). CRD schemas take
`nullable: true` as "null is also allowed". Needs PyYAML only when --crd is given.
"""

import argparse
import copy
import json
import os
import sys

INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def strictify(node, crd=False):
    """Returns a transformed deep copy of one schema node."""
    if isinstance(node, list):
        return [strictify(n, crd) for n in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string" or node.get("x-kubernetes-int-or-string"):
        out = copy.deepcopy(INT_OR_STRING)
        if "description" in node:
            out["description"] = node["description"]
        return out
    out = {}
    for key, value in node.items():
        if key == "format":
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: strictify(v, crd) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not") or key in ("allOf", "anyOf", "oneOf"):
            out[key] = strictify(value, crd)
        else:
            out[key] = copy.deepcopy(value)
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if crd and out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def file_name(group, version, kind):
    suffix = f"-{group.split('.')[0]}" if group else ""
    return f"{kind.lower()}{suffix}-{version.lower()}.json"


def write(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    os.replace(tmp, path)


def from_swagger(swagger_path, out):
    with open(swagger_path) as f:
        definitions = json.load(f)["definitions"]
    strict = {}
    for name, schema in definitions.items():
        if name == "io.k8s.apimachinery.pkg.api.resource.Quantity":
            strict[name] = dict(QUANTITY, description=schema.get("description", ""))
        else:
            strict[name] = strictify(schema)
    write(os.path.join(out, "_definitions.json"), {"$schema": "http://json-schema.org/draft-04/schema#", "definitions": strict})
    count = 0
    for name, schema in definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            ref = {"$schema": "http://json-schema.org/draft-04/schema#", "$ref": f"_definitions.json#/definitions/{name}"}
            write(os.path.join(out, file_name(gvk["group"], gvk["version"], gvk["kind"])), ref)
            count += 1
    return count


def from_crd(crd_path, out):
    import yaml  # only needed here

    count = 0
    with open(crd_path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for crd in docs:
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = copy.deepcopy(((version.get("schema") or {}).get("openAPIV3Schema")) or {"type": "object"})
            props = schema.setdefault("properties", {})
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            # The API server owns metadata's schema for custom resources: an object, not checked further.
            props["metadata"] = {"type": "object"}
            doc = strictify(schema, crd=True)
            doc["$schema"] = "http://json-schema.org/draft-04/schema#"
            write(os.path.join(out, file_name(spec["group"], version["name"], spec["names"]["kind"])), doc)
            count += 1
    return count


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--swagger", required=True, help="Kubernetes api/openapi-spec/swagger.json")
    ap.add_argument("--crd", action="append", default=[], help="a CustomResourceDefinition YAML file (repeatable)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    n = from_swagger(args.swagger, args.out)
    print(f"  {n} Kubernetes kinds from {args.swagger}")
    for crd in args.crd:
        m = from_crd(crd, args.out)
        print(f"  {m} custom kind version(s) from {crd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
