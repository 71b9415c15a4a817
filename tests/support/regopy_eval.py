"""Evaluate ``data.ibex.decision`` with regopy (Microsoft rego-cpp), one JSON input per line.

Run as a subprocess by the differential test, never imported into the test process: regopy
1.5.2 can abort its whole process on some Rego constructs, and a crash here must cost one input,
not the test run. Usage::

    python tests/support/regopy_eval.py POLICIES_DIR < inputs.jsonl > results.jsonl

Each output line is ``{"ok": true, "result": <decision or null if undefined>}`` or
``{"ok": false, "error": "..."}``, flushed at once so that the parent knows exactly which input
was being evaluated if the process dies. The policy is compiled once into a rego-cpp bundle
(``Interpreter.build``) and each input is given with ``set_input_term``, the input setter, not
through test rules or ``with input as``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import regopy

from ibex.policy_bundle import PolicyBundle

ENTRYPOINT = "ibex/decision"


def main() -> int:
    bundle = PolicyBundle.load(Path(sys.argv[1]))
    interpreter = regopy.Interpreter()
    for rel, text in sorted(bundle.modules.items()):
        interpreter.add_module(rel, text)
    interpreter.add_data_json(bundle.data_json)
    compiled = interpreter.build("data.ibex.decision", [ENTRYPOINT])
    if not compiled.ok():
        print(json.dumps({"ok": False, "error": "the bundle does not compile"}), flush=True)
        return 1
    print(json.dumps({"ready": True, "rego_version": regopy.rego_version()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            interpreter.set_input_term(line)
            text = str(interpreter.query_bundle_entrypoint(compiled, ENTRYPOINT))
            if text.strip() == "undefined":
                reply = {"ok": True, "result": None}
            else:
                value = json.loads(text)
                reply = {"ok": True, "result": value["expressions"][0]}
        except Exception as exc:  # reported per input, never hidden
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
