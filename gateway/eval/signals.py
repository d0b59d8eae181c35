"""The three signals that fine-tuning is the right next step, computed from stored eval runs.

- format: prompting gets the format right ~90% of the time but not 99%; a rate of format failures
  between 2% and 20% is what a fine-tune fixes and another prompt rarely does.
- cost: the best variant is the cheapest one statistically tied with it (no cheaper prompt reaches
  its score) and its prompt is mostly examples: a fine-tune learns them and stops paying for them.
- capability: score against number of examples has flattened (the last step's gain lies within
  the interval) while many labelled examples exist: more context will not help, training may.

Pure functions over the stored run format (``gateway.eval.report.report_json``).
"""

from __future__ import annotations

from typing import Any

from gateway.eval.analysis import malformed
from gateway.eval.stats import wilson

__all__ = [
    "FORMAT_BAND",
    "MANY_LABELLED",
    "capability_signal",
    "cost_signal",
    "failure_kind",
    "format_signal",
    "verdict",
]

FORMAT_BAND = (0.02, 0.20)
#: Labelled examples from which a fine-tune is worth trying.
MANY_LABELLED = 100
#: A plateau far below this score is a capability limit, not a finished task.
GOOD_ENOUGH = 0.95
#: The best arm's prompt tokens per call over the leanest arm's, from which examples dominate its cost.
EXAMPLE_HEAVY = 3.0


def failure_kind(item: dict[str, Any], labels: set[str] | None, metric: str) -> str | None:
    """``error`` (no answer), ``format`` (empty, refused, not a known label, not the JSON asked for),
    ``content`` (well-formed but wrong), or None for a right answer.

    A run stored by today's ``prefit eval`` carries each item's kind (``failure``, from
    ``gateway.eval.analysis``); older runs are classified with the same ``malformed`` test, plus
    an answer outside the label set."""
    if "failure" in item:
        kind = item["failure"]
        return kind if isinstance(kind, str) else None
    if item.get("error") is not None:
        return "error"
    if item.get("scores", {}).get(metric, 0.0) >= 0.5:
        return None
    output = str(item.get("output") or "").strip()
    expected = item.get("expected")
    if malformed(output, expected):
        return "format"
    if not isinstance(expected, dict | list) and labels is not None and output.casefold() not in labels:
        return "format"
    return "content"


def _labels(variants: dict[str, Any]) -> set[str] | None:
    """The closed label set of a classification task (string answers, few distinct), else None."""
    expected = [item.get("expected") for v in variants.values() for item in v.get("items", [])]
    if not expected or not all(isinstance(e, str) for e in expected):
        return None
    distinct = {str(e).strip().casefold() for e in expected}
    return distinct if len(distinct) <= 20 else None


def best_variant(run: dict[str, Any], metric: str) -> str | None:
    scored = {name: v["scores"].get(metric) for name, v in run["variants"].items() if v.get("measured")}
    scored = {name: s for name, s in scored.items() if s is not None}
    return max(scored, key=lambda name: scored[name]) if scored else None


def format_signal(run: dict[str, Any], metric: str) -> dict[str, Any]:
    best = best_variant(run, metric)
    if best is None:
        return {"variant": None, "flag": False, "evidence": "no variant was measured"}
    items = run["variants"][best]["items"]
    labels = _labels(run["variants"])
    kinds = [failure_kind(item, labels, metric) for item in items]
    failures = kinds.count("format")
    rate = failures / len(items) if items else 0.0
    low, high = wilson(failures, len(items))
    flag = FORMAT_BAND[0] <= rate <= FORMAT_BAND[1]
    evidence = (
        f"{best}: {failures} of {len(items)} answers malformed ({rate:.1%}, 95% CI [{low:.1%}, {high:.1%}]); "
        f"{kinds.count('content')} well-formed but wrong, {kinds.count('error')} without an answer"
    )
    return {
        "variant": best,
        "rate": rate,
        "low": low,
        "high": high,
        "n": len(items),
        "flag": flag,
        "evidence": evidence,
    }


def _economics(name: str, data: dict[str, Any], metric: str) -> dict[str, Any]:
    items = data["items"]
    correct = sum(1 for item in items if item.get("scores", {}).get(metric, 0.0) >= 0.5)
    latency = sum((item.get("latency_s") or item.get("cached_latency_s") or 0.0) for item in items)
    cost = data.get("cost_usd")
    low, high = data.get("interval") or wilson(correct, len(items))
    per = max(correct, 1)
    return {
        "variant": name,
        "score": data["scores"].get(metric),
        "low": low,
        "high": high,
        "correct": correct,
        "cost_per_correct": None if cost is None else cost / per,
        "latency_per_correct_s": latency / per,
        "prompt_tokens_per_call": data.get("prompt_tokens", 0) / max(len(items), 1),
        "tokens_per_correct": (data.get("prompt_tokens", 0) + data.get("completion_tokens", 0)) / per,
    }


def _price(entry: dict[str, Any]) -> float:
    """Cost per correct answer; tokens per correct answer where no model is priced."""
    if entry["cost_per_correct"] is not None:
        return float(entry["cost_per_correct"])
    return float(entry["tokens_per_correct"])


def cost_signal(run: dict[str, Any], metric: str) -> dict[str, Any]:
    best = best_variant(run, metric)
    if best is None:
        return {"variant": None, "flag": False, "evidence": "no variant was measured"}
    arms = [_economics(n, v, metric) for n, v in run["variants"].items() if v.get("measured")]
    top = next(a for a in arms if a["variant"] == best)
    tied = [a for a in arms if a["high"] >= top["low"] and a["low"] <= top["high"]]
    cheapest = min(tied, key=_price)
    leanest = min(a["prompt_tokens_per_call"] for a in arms)
    heavy = top["prompt_tokens_per_call"] >= EXAMPLE_HEAVY * max(leanest, 1.0)
    flag = cheapest["variant"] == best and heavy and len(arms) > 1
    unit = "USD" if top["cost_per_correct"] is not None else "tokens"
    evidence = (
        f"{best}: {_price(top):.4g} {unit} and {top['latency_per_correct_s']:.3f} s per correct answer, "
        f"{top['prompt_tokens_per_call']:.0f} prompt tokens a call; cheapest arm tied with it: {cheapest['variant']} "
        f"({_price(cheapest):.4g} {unit} per correct answer)"
    )
    return {"variant": best, "cheapest_tied": cheapest["variant"], "arms": arms, "flag": flag, "evidence": evidence}


def capability_signal(points: list[dict[str, Any]], labelled: int) -> dict[str, Any]:
    """``points``: ``{k, score, low, high}`` in increasing k."""
    if len(points) < 2:
        return {"points": points, "labelled": labelled, "flag": False, "evidence": "fewer than two sweep points"}
    last, previous = points[-1], points[-2]
    gain = last["score"] - previous["score"]
    plateau = previous["score"] >= last["low"]
    best = max(point["score"] for point in points)
    flag = plateau and labelled >= MANY_LABELLED and best < GOOD_ENOUGH
    curve = ", ".join(f"k={p['k']}: {p['score']:.2f} [{p['low']:.2f}, {p['high']:.2f}]" for p in points)
    evidence = (
        f"{curve}; last step k={previous['k']}->{last['k']} gained {gain:+.2f} "
        f"({'within' if plateau else 'beyond'} its interval); {labelled} labelled examples available"
    )
    return {
        "points": points,
        "gain": gain,
        "plateau": plateau,
        "labelled": labelled,
        "flag": flag,
        "evidence": evidence,
    }


def verdict(fmt: dict[str, Any], cost: dict[str, Any], capability: dict[str, Any]) -> tuple[str, str]:
    """The one verdict and its reason in one sentence (format first: it is the cheapest to fix)."""
    if fmt["flag"]:
        return "fine-tune-format", (
            f"the best prompt gets the format wrong {fmt['rate']:.0%} of the time, in the band a fine-tune fixes "
            "and prompting rarely does"
        )
    if capability["flag"]:
        return "fine-tune-capability", (
            f"the score stopped rising with more examples at {capability['points'][-1]['score']:.2f} while "
            f"{capability['labelled']} labelled examples exist"
        )
    if cost["flag"]:
        return "fine-tune-cost", (
            f"no cheaper prompt matches {cost['variant']}, whose examples dominate its cost: a fine-tune "
            "would stop paying for them"
        )
    return "keep-prompting", "no signal says prompting has run out: keep iterating on prompts and examples"
