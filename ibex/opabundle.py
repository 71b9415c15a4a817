"""Write the policy bundle as an Open Policy Agent bundle directory, for an OPA sidecar.

``policies/`` is not an OPA bundle as it stands: the agreements are YAML that IBEX checks and
compiles into the ``data.ibex_data`` document (:mod:`ibex.policy_bundle`). This writes what OPA
loads with ``opa run --server --bundle DIR``: the Rego modules (tests left out), the compiled
``ibex_data/data.json`` and a ``.manifest`` whose revision is the IBEX bundle digest, so an
operator can check that OPA decides with the same bundle the broker records
(``GET /v1/data/system/bundles`` on OPA shows the revision).

    python -m ibex.opabundle bundle --policies policies --out /bundle

Kubernetes ships ``policies/`` as one ConfigMap (``configmap`` prints it); a ConfigMap has flat
keys, so a file's path is its key with the first ``--`` standing for ``/``
(``ibex--decision.rego``), and ``unflatten`` rebuilds the tree from the mounted volume, skipping
the volume's hidden ``..data`` bookkeeping:

    python -m ibex.opabundle configmap --policies policies --name ibex-policies | kubectl apply -f -
    python -m ibex.opabundle unflatten --src /etc/ibex/policies-cm --out /var/lib/ibex/policies
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ibex.errors import IbexError
from ibex.policy_bundle import DATA_ROOT, PolicyBundle

MANIFEST = ".manifest"


def write_opa_bundle(policies_dir: Path, out: Path) -> PolicyBundle:
    """Check and compile ``policies_dir`` and write it to ``out`` as an OPA bundle."""
    bundle = PolicyBundle.load(policies_dir)
    out.mkdir(parents=True, exist_ok=True)
    for rel, text in sorted(bundle.modules.items()):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    data_dir = out / DATA_ROOT
    data_dir.mkdir(exist_ok=True)
    (data_dir / "data.json").write_text(
        json.dumps(bundle.data[DATA_ROOT], separators=(",", ":"), ensure_ascii=False),
        encoding="utf-8",
    )
    roots = sorted({_package_root(text) for text in bundle.modules.values()} | {DATA_ROOT})
    manifest = {"revision": bundle.digest, "roots": roots, "metadata": {"ibex": bundle.digest}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return bundle


def _package_root(text: str) -> str:
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "package":
            return words[1].split(".")[0]
    raise ValueError("a Rego module without a package line")


FLAT_SEPARATOR = "--"


def policy_files(policies_dir: Path) -> list[Path]:
    """The files a policy bundle is made of (Rego modules without tests, YAML), sorted."""
    return sorted(
        p
        for p in policies_dir.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(policies_dir).parts)
        and (p.suffix in (".yaml", ".yml") or (p.suffix == ".rego" and "_test" not in p.stem))
    )


def flat_key(rel: str) -> str:
    if rel.count("/") > 1 or rel.startswith("."):
        raise ValueError(f"{rel}: a ConfigMap holds files at most one directory deep")
    return rel.replace("/", FLAT_SEPARATOR, 1)


def configmap(policies_dir: Path, name: str, namespace: str) -> dict[str, Any]:
    """A Kubernetes ConfigMap holding ``policies_dir`` (checked first: it must load)."""
    bundle = PolicyBundle.load(policies_dir)
    data = {
        flat_key(p.relative_to(policies_dir).as_posix()): p.read_text(encoding="utf-8")
        for p in policy_files(policies_dir)
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "ibex"},
            "annotations": {"ibex.example/policy-digest": bundle.digest},
        },
        "data": data,
    }


def unflatten(src: Path, out: Path) -> list[Path]:
    """Rebuild the ``policies/`` tree from a mounted ConfigMap directory."""
    written: list[Path] = []
    for entry in sorted(src.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        target = out / entry.name.replace(FLAT_SEPARATOR, "/", 1)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(entry.read_bytes())
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ibex.opabundle", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("bundle", help="write an OPA bundle directory")
    b.add_argument("--policies", required=True, type=Path)
    b.add_argument("--out", required=True, type=Path)
    c = sub.add_parser("configmap", help="print the policies as a Kubernetes ConfigMap (YAML)")
    c.add_argument("--policies", required=True, type=Path)
    c.add_argument("--name", default="ibex-policies")
    c.add_argument("--namespace", default="ibex")
    u = sub.add_parser("unflatten", help="rebuild policies/ from a mounted ConfigMap")
    u.add_argument("--src", required=True, type=Path)
    u.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        if args.action == "bundle":
            bundle = write_opa_bundle(args.policies, args.out)
            print(f"wrote OPA bundle {bundle.digest} to {args.out}")
        elif args.action == "configmap":
            doc = configmap(args.policies, args.name, args.namespace)
            print(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), end="")
        else:
            files = unflatten(args.src, args.out)
            print(f"wrote {len(files)} policy file(s) to {args.out}")
    except IbexError as exc:
        print(f"ibex.opabundle: {exc.diagnostics()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
