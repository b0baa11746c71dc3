"""How the JSON Schemas beside this file were made from KEDA's CustomResourceDefinitions.

    git show v2.20.2:config/crd/bases/keda.sh_scaledobjects.yaml \\
        | python tests/vendor/keda-2.20.2/convert.py > tests/vendor/keda-2.20.2/scaledobject-keda-v1alpha1.json

(the same for ``keda.sh_triggerauthentications.yaml`` → ``triggerauthentication-keda-v1alpha1.json``).

The CRD's ``openAPIV3Schema`` (the one served and stored version) becomes a JSON Schema (draft
2020-12) the way the API server reads it:

- ``nullable: true`` adds ``"null"`` to the type; ``x-kubernetes-int-or-string`` is an integer or
  a string; ``x-kubernetes-preserve-unknown-fields`` keeps unknown fields allowed;
- every other object with ``properties`` refuses unknown fields (``additionalProperties: false``),
  as the API server prunes them (a misspelt field would silently vanish: the test refuses it);
- ``apiVersion`` and ``kind`` are pinned to the CRD's group/version and kind;
- dropped: ``x-kubernetes-validations`` (CEL rules; the test checks the one that matters,
  ``minReplicaCount`` ≤ ``maxReplicaCount``, itself), ``x-kubernetes-list-type`` / ``-map-keys``
  (merge hints, no constraint on one document), ``description`` (documentation only: the files stay small).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

DROPPED = {"description", "nullable"}  # and every x-kubernetes-* keyword, read below where it matters


def convert(node: Any) -> Any:
    if isinstance(node, list):
        return [convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: convert(v) for k, v in node.items() if k not in DROPPED and not k.startswith("x-kubernetes-")}
    if "properties" in node:  # property names are data, not keywords: keep every one
        out["properties"] = {name: convert(schema) for name, schema in node["properties"].items()}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["type"] = ["integer", "string"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    return out


def json_schema(crd: dict) -> dict:
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema = convert(version["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version['name']}"}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["required"] = sorted({"apiVersion", "kind", "metadata", *schema.get("required", [])})
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


if __name__ == "__main__":
    json.dump(json_schema(yaml.safe_load(sys.stdin)), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
