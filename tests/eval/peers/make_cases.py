"""Regenerate the peer-suite case lists in this folder from fetched copies of the peers' repositories.

    python tests/eval/peers/make_cases.py --math-verify GIT_DIR --lighteval GIT_DIR [--commit-mv SHA] [--commit-le SHA]

GIT_DIR is a (bare) git directory of github.com/huggingface/Math-Verify or
github.com/huggingface/lighteval; the files are read with `git show COMMIT:PATH`, nothing
of theirs is imported or executed. The test functions' `pytest.mark.parametrize` lists are
read with `ast` and `ast.literal_eval`, so only literal cases come out; anything that is
not a literal (an f-string computed at import) or not a well-formed row upstream (a row
with a missing field, which pytest would reject) is listed under "skipped" with the reason.

Writes `mathverify_cases.json` and `lighteval_cases.json` beside this script. Each case
keeps the upstream file, test function, row index and line, and the comparison options the
upstream test passes (match_types, precision, strict, allow_set_relation_comp), so a
reader can find the original. The m1 side (how a case is graded, and which cases m1
decides differently and why) lives in `tests/eval/test_peer_suites.py` and
`mathverify_differences.json`.

Licences: Math-Verify is Apache-2.0 (its LICENCE file), lighteval is MIT; the case lists
are derived test data with attribution (NOTICE.md).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
MATH_VERIFY_FILES = ["tests/test_all.py", "tests/test_boxed.py", "tests/test_numina_cases.py",
                     "tests/test_open_thoughts.py", "tests/test_yujianll.py"]
LIGHTEVAL_DIR = "tests/unit/metrics/test_cases"
# The pass@k / maj@k / avg@k suites (avg@k is the mean pass@1 of k samples). The other
# metric files measure what m1.eval.metrics does not compute (BLEU, ROUGE, perplexity,
# G-Pass@k, ...).
LIGHTEVAL_FILES = ["pass_at_k.json", "pass_at_k_math.json", "pass_at_k_letters.json", "maj_at_k.json",
                   "avg_at_k.json", "avg_at_k_math.json"]
# compare_strings' defaults in Math-Verify's tests/test_all.py (read from its signature below).
COMPARE_KEYWORDS = ("match_types", "precision", "strict", "allow_set_relation_comp")


def git_show(git_dir: str, commit: str, path: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def resolve(git_dir: str, commit: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", "rev-parse", commit], check=True,
                          capture_output=True, text=True).stdout.strip()


def _parametrize(dec: ast.expr) -> tuple[list[str], ast.expr] | None:
    """(argument names, the argvalues node) of a `@pytest.mark.parametrize(...)` decorator."""
    if not (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) and dec.func.attr == "parametrize"):
        return None
    names = ast.literal_eval(dec.args[0])
    names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
    return names, dec.args[1]


def _compare_defaults(tree: ast.Module) -> dict:
    """Keyword defaults of `compare_strings` in test_all.py."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "compare_strings":
            args = node.args.args[-len(node.args.defaults):]
            return {a.arg: ast.literal_eval(d) for a, d in zip(args, node.args.defaults)}
    raise SystemExit("compare_strings not found in tests/test_all.py: the upstream layout changed")


def _call_options(fn: ast.FunctionDef, defaults: dict) -> dict:
    """The comparison options a test function passes: `compare_strings(..., key=value)` or plain `verify(parse(..))`."""
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "compare_strings":
            opts = dict(defaults)
            for kw in node.keywords:
                try:
                    opts[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:  # a parameter of the test (e.g. allow_set_relation_comp)
                    opts[kw.arg] = {"param": ast.unparse(kw.value)}
            return {"call": "compare_strings", **opts}
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "verify":
            return {"call": "verify(parse(gold), parse(pred))"}
    return {"call": "unknown"}


def math_verify_cases(git_dir: str, commit: str) -> dict:
    cases, skipped = [], []
    defaults = _compare_defaults(ast.parse(git_show(git_dir, commit, "tests/test_all.py")))
    for path in MATH_VERIFY_FILES:
        tree = ast.parse(git_show(git_dir, commit, path))
        for fn in [n for n in tree.body if isinstance(n, ast.FunctionDef)]:
            for dec in fn.decorator_list:
                spec = _parametrize(dec)
                if spec is None:
                    continue
                names, values = spec
                opts = _call_options(fn, defaults)
                for i, row in enumerate(values.elts):
                    where = {"file": path, "test": fn.name, "row": i, "line": row.lineno}
                    try:
                        row_value = ast.literal_eval(row)
                    except ValueError:
                        skipped.append({**where, "reason": "not a literal upstream (computed at import)"})
                        continue
                    if not isinstance(row_value, tuple) or len(row_value) != len(names):
                        skipped.append({**where, "reason": f"malformed upstream: {len(row_value) if isinstance(row_value, tuple) else 1}"
                                                           f" values for {len(names)} parameters (pytest rejects the row)"})
                        continue
                    case = dict(zip(names, row_value))
                    expected = case.pop("expected", case.pop("result", None))
                    options = dict(opts)
                    for k, v in list(options.items()):
                        if isinstance(v, dict) and v.get("param") in case:
                            options[k] = case.pop(v["param"])
                    if "precision" in case:
                        options["precision"] = case.pop("precision")
                    cases.append({"id": f"{path.split('/')[-1][:-3]}::{fn.name}[{i}]", **where,
                                  "gold": case.pop("gold"), "pred": case.pop("pred"), "expected": int(expected),
                                  "options": options})
                    assert not case, case
    return {"source": {"repo": "huggingface/Math-Verify", "commit": commit, "license": "Apache-2.0",
                       "files": MATH_VERIFY_FILES},
            "cases": cases, "skipped": skipped}


def lighteval_cases(git_dir: str, commit: str) -> dict:
    suites = []
    for name in LIGHTEVAL_FILES:
        path = f"{LIGHTEVAL_DIR}/{name}"
        suites.append({"file": path, **json.loads(git_show(git_dir, commit, path))})
    return {"source": {"repo": "huggingface/lighteval", "commit": commit, "license": "MIT",
                       "files": [f"{LIGHTEVAL_DIR}/{n}" for n in LIGHTEVAL_FILES]},
            "suites": suites}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--math-verify", required=True, help="git dir of huggingface/Math-Verify")
    ap.add_argument("--lighteval", required=True, help="git dir of huggingface/lighteval")
    ap.add_argument("--commit-mv", default="HEAD")
    ap.add_argument("--commit-le", default="HEAD")
    args = ap.parse_args()
    mv = math_verify_cases(args.math_verify, resolve(args.math_verify, args.commit_mv))
    le = lighteval_cases(args.lighteval, resolve(args.lighteval, args.commit_le))
    (HERE / "mathverify_cases.json").write_text(json.dumps(mv, indent=1, ensure_ascii=False) + "\n")
    (HERE / "lighteval_cases.json").write_text(json.dumps(le, indent=1, ensure_ascii=False) + "\n")
    print(f"Math-Verify {mv['source']['commit'][:12]}: {len(mv['cases'])} cases, {len(mv['skipped'])} skipped; "
          f"lighteval {le['source']['commit'][:12]}: {sum(len(s['test_cases']) for s in le['suites'])} cases")


if __name__ == "__main__":
    main()
