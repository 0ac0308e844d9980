"""`m1 compare`: what a candidate model keeps of a reference model, from two `m1 eval` runs.

The question a distilled hybrid must answer is not its perplexity but whether it still
*generates* what its teacher does: log-likelihood scores can put a hybrid within a fraction
of a point of its teacher while its generated answers trail by many points. So both models
are run through `m1 eval` on the same problems, with the same prompt and seeds, and this
module reads the two `samples.jsonl` files (nothing is regenerated):

- greedy runs (temperature 0): each model's accuracy, their paired difference, how often
  the candidate's final answer agrees with the reference's, and how many tokens the
  candidate's text follows the reference's before the first token that differs;
- sampled runs (n >= 2): pass@k and maj@k of each at k = 1, 2, 4 ... n, and the candidate's
  share of the reference's (candidate / reference), each with a 95% paired-bootstrap
  interval over problems;
- both: how each model's completions end (the share that hit the token limit, the share with
  no answer, the mean length), where a distilled model that loops shows first.

Only problems with at least n samples in both runs are compared (n: the smaller run's).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from m1.errors import UserError, field_error, require_path
from m1.eval.grader import answers_equivalent
from m1.eval.metrics import chance_baseline, k_values, mean_interval, paired_difference_interval, ratio_interval
from m1.eval.samples import answer_groups, group_by_problem, read_samples, scores_at_k

logger = logging.getLogger(__name__)


def _config(path: Path, name: str) -> dict:
    """summary.json's config of one `m1 eval` output directory ({} before its run has finished)."""
    require_path(path, "directory", name)
    summary = path / "summary.json"
    return json.loads(summary.read_text()).get("config", {}) if summary.exists() else {}


def _run(path: Path, name: str) -> tuple[dict, list[dict]]:
    """The config and the rows of samples.jsonl of one `m1 eval` output directory."""
    config = _config(path, name)
    rows = read_samples(path / "samples.jsonl")
    if not rows:
        raise field_error(name, f"{path / 'samples.jsonl'} has no samples (is {path} an m1 eval output directory?)")
    return config, rows


def answers_agree(a: str | None, b: str | None) -> bool:
    """Two final answers agree when both are missing or they are mathematically equivalent."""
    if a is None or b is None:
        return a is None and b is None
    return answers_equivalent(a, b)


def common_prefix_tokens(a: list[int], b: list[int]) -> int:
    """How many leading tokens two token sequences share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _interval(values: list[float]) -> list[float]:
    return list(mean_interval(values))


def compare_greedy(ref: dict[str, dict], cand: dict[str, dict], tokenizer) -> dict:
    """Greedy measures over the problems of `ref` and `cand` (problem id -> its first sample's row)."""
    ids = sorted(ref)
    rc = [float(ref[i]["correct"]) for i in ids]
    cc = [float(cand[i]["correct"]) for i in ids]
    agree = [float(answers_agree(ref[i]["answer"], cand[i]["answer"])) for i in ids]
    out = {"reference_accuracy": _interval(rc), "candidate_accuracy": _interval(cc),
           "difference": list(paired_difference_interval(cc, rc)), "answer_agreement": _interval(agree),
           "identical_text": sum(ref[i]["text"] == cand[i]["text"] for i in ids) / len(ids),
           "both_without_answer": sum(ref[i]["answer"] is None and cand[i]["answer"] is None for i in ids) / len(ids)}
    if tokenizer is not None:
        def toks(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False)["input_ids"]

        prefix, ref_len = [], []
        for i in ids:
            a = toks(ref[i]["text"])
            prefix.append(float(common_prefix_tokens(a, toks(cand[i]["text"]))))
            ref_len.append(float(len(a)))
        out["prefix_tokens"] = _interval(prefix)
        out["reference_tokens"] = sum(ref_len) / len(ref_len)
    return out


def compare_sampled(ref: dict[str, list[dict]], cand: dict[str, list[dict]], n: int) -> dict:
    """pass@k and maj@k of both, and the candidate's share of the reference's, from the first n samples."""
    ids = sorted(ref)
    out: dict[str, dict] = {"pass@k": {}, "maj@k": {}}
    scores: dict[str, dict[str, dict[int, list[float]]]] = {m: {"ref": {}, "cand": {}} for m in out}
    for side, runs in (("ref", ref), ("cand", cand)):
        groups = answer_groups({i: runs[i] for i in ids}, n)
        for i in ids:
            passes, majs = scores_at_k(runs[i][:n], k_values(n), groups[i])
            for k in k_values(n):
                scores["pass@k"][side].setdefault(k, []).append(passes[k])
                scores["maj@k"][side].setdefault(k, []).append(majs[k])
    for metric, by in scores.items():
        for k in k_values(n):
            a, b = by["cand"][k], by["ref"][k]
            out[metric][str(k)] = {"reference": _interval(b), "candidate": _interval(a), "share": list(ratio_interval(a, b))}
    return out


def is_greedy(*configs: dict) -> bool:
    """Whether every run (its summary.json config) sampled at temperature 0."""
    return all((c.get("sampling") or {}).get("temperature", 1) == 0 for c in configs)


def completion_measures(by_problem: dict[str, list[dict]], n: int) -> dict:
    """How a model's first n samples a problem end: the share that hit the token limit (a model that
    loops shows here first), the share with no answer found, and the mean length in tokens."""
    rows = [r for rs in by_problem.values() for r in rs[:n]]
    return {"truncated": sum(r["finish_reason"] == "length" for r in rows) / len(rows),
            "no_answer": sum(r["answer"] is None for r in rows) / len(rows),
            "mean_tokens": sum(r["num_tokens"] for r in rows) / len(rows)}


def compare_runs(reference: Path, candidate: Path, tokenizer=None) -> dict:
    """Every benchmark both runs hold: greedy measures when both sampled at temperature 0,
    sampled measures when both have n >= 2 samples a problem."""
    ref_cfg, ref_rows = _run(reference, "--reference")
    cand_cfg, cand_rows = _run(candidate, "--candidate")
    result: dict = {"reference": str(reference), "candidate": str(candidate),
                    "reference_model": ref_cfg.get("model"), "candidate_model": cand_cfg.get("model"), "benchmarks": {}}
    benches = [b for b in dict.fromkeys(r["benchmark"] for r in ref_rows) if any(r["benchmark"] == b for r in cand_rows)]
    if not benches:
        raise UserError(f"--reference {reference} and --candidate {candidate} share no benchmark")
    greedy = is_greedy(ref_cfg, cand_cfg)
    for b in benches:
        ref_by = group_by_problem([r for r in ref_rows if r["benchmark"] == b])
        cand_by = group_by_problem([r for r in cand_rows if r["benchmark"] == b])
        n = min(ref_cfg.get("n") or max(map(len, ref_by.values())), cand_cfg.get("n") or max(map(len, cand_by.values())))
        ids = [i for i in ref_by if i in cand_by and len(ref_by[i]) >= n and len(cand_by[i]) >= n]
        if not ids:
            raise UserError(f"{b}: no problem has {n} samples in both runs")
        entry: dict = {"problems": len(ids), "n": n, "greedy": greedy,
                       "completions": {"reference": completion_measures({i: ref_by[i] for i in ids}, n),
                                       "candidate": completion_measures({i: cand_by[i] for i in ids}, n)}}
        chance = chance_baseline([ref_by[i][0].get("gold") for i in ids], k_values(n))
        if chance is not None:
            entry["chance"] = chance
        if greedy:
            entry["greedy_measures"] = compare_greedy({i: ref_by[i][0] for i in ids}, {i: cand_by[i][0] for i in ids}, tokenizer)
        if n >= 2:
            entry.update(compare_sampled({i: ref_by[i] for i in ids}, {i: cand_by[i] for i in ids}, n))
        result["benchmarks"][b] = entry
        logger.info("%s: %d problems compared (n=%d%s)", b, len(ids), n, ", greedy" if greedy else "")
    return result


def _pct(v: list[float]) -> str:
    return f"{100 * v[0]:.1f} ({100 * v[1]:.1f}-{100 * v[2]:.1f})"


def format_compare(result: dict) -> str:
    """compare.md: one section per benchmark."""
    lines = ["# m1 compare", "", f"reference: `{result['reference_model'] or result['reference']}`  ",
             f"candidate: `{result['candidate_model'] or result['candidate']}`", "",
             "Values in % with 95% paired-bootstrap intervals over problems; share = candidate / reference.", ""]
    for b, e in result["benchmarks"].items():
        lines += [f"## {b}", "", f"{e['problems']} problems, n = {e['n']}" + (", greedy" if e["greedy"] else ""), ""]
        c = e.get("completions")
        if c:
            r, k = c["reference"], c["candidate"]
            lines += ["| completions | reference | candidate |", "|---|---|---|",
                      f"| hit the token limit | {100 * r['truncated']:.1f} | {100 * k['truncated']:.1f} |",
                      f"| no answer found | {100 * r['no_answer']:.1f} | {100 * k['no_answer']:.1f} |",
                      f"| mean tokens | {r['mean_tokens']:.1f} | {k['mean_tokens']:.1f} |", ""]
        g = e.get("greedy_measures")
        if g:
            lines += ["| measure | value |", "|---|---|",
                      f"| reference accuracy | {_pct(g['reference_accuracy'])} |",
                      f"| candidate accuracy | {_pct(g['candidate_accuracy'])} |",
                      f"| candidate − reference | {_pct(g['difference'])} |",
                      f"| final answers agree | {_pct(g['answer_agreement'])} |",
                      f"| of which neither has an answer | {100 * g['both_without_answer']:.1f} |",
                      f"| identical text | {100 * g['identical_text']:.1f} |"]
            if "prefix_tokens" in g:
                p = g["prefix_tokens"]
                lines.append(f"| tokens before the first difference | {p[0]:.1f} ({p[1]:.1f}-{p[2]:.1f}) of "
                             f"{g['reference_tokens']:.1f} (reference's mean length) |")
            lines.append("")
        ch = e.get("chance")
        if ch:
            lines += [f"Chance: always answering {ch['constant_answer']!r} scores {100 * ch['constant_accuracy']:.1f}%; "
                      "k guesses drawn from the other problems' gold answers score the *chance* column "
                      "(`m1.eval.metrics.guessing_pass_at_k`)."]
            if "pass@k" not in e:  # greedy, n = 1: the one guess
                lines[-1] += f" One guess scores {100 * ch['pass@k']['1']:.1f}%."
            below = [k for k, v in e.get("pass@k", {}).items() if v["reference"][0] <= ch["pass@k"][k]]
            g = e.get("greedy_measures")
            if g and g["reference_accuracy"][0] <= max(ch["constant_accuracy"], ch["pass@k"]["1"]):
                below.append("1 (greedy)")
            if below:
                lines.append(f"**The reference is at or below chance at k = {', '.join(below)}:** there the share compares "
                             "how two models guess, not what they can do.")
            lines.append("")
        for metric in ("pass@k", "maj@k"):
            if metric not in e:
                continue
            chance_col = metric == "pass@k" and ch is not None
            lines += [f"| {metric} k | reference | candidate | share |" + (" chance |" if chance_col else ""),
                      "|---|---|---|---|" + ("---|" if chance_col else "")]
            for k, v in e[metric].items():
                s = v["share"]
                lines.append(f"| {k} | {_pct(v['reference'])} | {_pct(v['candidate'])} | {s[0]:.3f} ({s[1]:.3f}-{s[2]:.3f}) |"
                             + (f" {100 * ch['pass@k'][k]:.1f} |" if chance_col else ""))
            lines.append("")
    return "\n".join(lines)


def cli_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="m1 compare", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                 description="What a candidate model keeps of a reference model's accuracy, from two "
                                             "m1 eval output directories on the same problems (nothing is regenerated).")
    ap.add_argument("--reference", type=Path, required=True, help="m1 eval output directory of the reference (the teacher)")
    ap.add_argument("--candidate", type=Path, required=True, help="m1 eval output directory of the candidate (the hybrid)")
    ap.add_argument("--out", type=Path, required=True, help="directory for compare.json and compare.md")
    ap.add_argument("--tokenizer", default=None,
                    help="tokenizer (directory, hub id or .gguf) for the tokens before the first difference of greedy texts; "
                         "default: the reference run's model")
    args = ap.parse_args(argv)
    ref_cfg = _config(args.reference, "--reference")
    cand_cfg = _config(args.candidate, "--candidate")
    tok_source = args.tokenizer or ref_cfg.get("model")
    tokenizer = None
    if tok_source and is_greedy(ref_cfg, cand_cfg):  # only greedy texts are compared token by token
        from m1.checkpoint import hub_like, load_tokenizer

        whence = "" if args.tokenizer else " (the reference run's model; pass --tokenizer where it is not on this machine)"
        if not Path(str(tok_source)).expanduser().exists() and not hub_like(str(tok_source)):
            raise field_error("--tokenizer", f"{tok_source!r} does not exist{whence}")
        try:
            tokenizer = load_tokenizer(tok_source)
        except (OSError, ValueError) as e:
            raise field_error("--tokenizer", f"cannot load a tokenizer from {tok_source!r}{whence}: {e}") from None
    result = compare_runs(args.reference, args.candidate, tokenizer)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(result, indent=2))
    (args.out / "compare.md").write_text(format_compare(result))
    logger.info("wrote %s", args.out / "compare.md")
    return 0
