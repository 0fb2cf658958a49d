"""Emptying the Prefect API of what a bootstrap registers (shared by the benchmark and
the test fixtures: one Prefect test server serves many runs)."""

from __future__ import annotations


def clean_prefect_api() -> None:
    """Delete deployments, work pools (but the default ones), blocks, global concurrency
    limits, variables and automations."""
    from infra_tasks.prefect_client import sync_client

    with sync_client() as c:
        for d in c.read_deployments():
            c.delete_deployment(d.id)
        for p in c.read_work_pools():
            if not p.name.startswith("default"):
                c.delete_work_pool(p.name)
        for b in c.read_block_documents():
            c.delete_block_document(b.id)
        for g in c.read_global_concurrency_limits(limit=200):
            c.delete_global_concurrency_limit_by_name(g.name)
        for v in c.read_variables():
            c.delete_variable_by_name(v.name)
        for a in c.read_automations():
            c.delete_automation(a.id)
