"""Rendering plans for people (text table) and machines (JSON). Rendering only:
plans are computed elsewhere."""

from __future__ import annotations

import json
from typing import Any

from .model import Action, Plan

WIDE = 70
SYMBOL = {Action.CREATE: "+", Action.UPDATE: "~", Action.REPLACE: "-/+", Action.NOOP: " ", Action.CONFLICT: "!",
          Action.DELETE: "-", Action.KEEP: " "}


def summary_line(plan: Plan) -> str:
    c = plan.counts()
    return (f"Plan for {plan.environment} (account {plan.account_id}, {plan.region}): "
            f"{c['create']} to create, {c['update']} to update, {c['replace']} to replace, "
            f"{c['no-op']} unchanged, {c['conflict']} conflicts")


NO_CHANGES = "No changes: the infrastructure matches the configuration."


def render_text(plan: Plan, show_noop: bool = False, empty: str = NO_CHANGES) -> str:
    lines = [summary_line(plan)] + [f"note: {n}" for n in plan.notes] + [""]
    shown = [c for c in plan.changes if show_noop or c.action is not Action.NOOP]
    if shown:
        width = max(len(c.key) for c in shown)
        lines.append(f"{'ACTION':<9} {'RESOURCE':<{width}}  REASON")
        for c in shown:
            lines.append(f"{c.action.value:<9} {c.key:<{width}}  {c.reason}")
            for d in c.diffs:
                path, cur, des = d.render()
                if len(cur) + len(des) <= WIDE:
                    lines.append(f"{'':<9}   {SYMBOL[c.action]} {path}: {cur} -> {des}")
                else:
                    lines.append(f"{'':<9}   {SYMBOL[c.action]} {path}:")
                    lines.append(f"{'':<9}       current: {cur}")
                    lines.append(f"{'':<9}       desired: {des}")
    else:
        lines.append(empty)
    for w in plan.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def to_json(plan: Plan) -> dict[str, Any]:
    return {
        "environment": plan.environment,
        "account_id": plan.account_id,
        "region": plan.region,
        "counts": plan.counts(),
        "digest": plan.digest(),
        "warnings": plan.warnings,
        "notes": plan.notes,
        "changes": [
            {"resource": c.key, "action": c.action.value, "reason": c.reason,
             "diffs": [dict(zip(("path", "current", "desired"), d.render())) for d in c.diffs]}
            for c in plan.changes
        ],
    }


def write_json(plan: Plan, path: str) -> None:
    with open(path, "w") as fh:
        json.dump(to_json(plan), fh, indent=2, sort_keys=True)
        fh.write("\n")
