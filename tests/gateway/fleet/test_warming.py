"""The warm rule's decisions (gateway.fleet.warming): which rule a process follows, and what it
warms before it is ready, in which order, within which budget."""

from __future__ import annotations

from gateway.fleet.warming import WarmRule, plan_start
from registry_sync.fleet import Served
from registry_sync.identity import VersionId
from registry_sync.repository import RouteState
from tests.support.versions import vid

RECENT = 3600.0


def route(name: str, version: int, alias: str = "champion") -> RouteState:
    return RouteState(name=name, alias=alias, version=version, active_version=version, generation=1)


def target_of(route: RouteState) -> VersionId:
    return vid(route.name, route.version)


def servable(version: VersionId) -> VersionId | None:
    return version


def test_auto_is_served_for_a_gateway_replica_or_beside_other_replicas_and_aliases_alone() -> None:
    assert WarmRule.choose("auto", role="gateway", others=[], recent_seconds=RECENT).mode == "served"
    beside = WarmRule.choose("auto", role="all", others=["b:8000", "c:8000"], recent_seconds=RECENT)
    assert beside.mode == "served" and "b:8000, c:8000" in beside.why
    alone = WarmRule.choose("auto", role="all", others=[], recent_seconds=RECENT)
    assert alone.mode == "aliases" and "no other replica" in alone.why
    for setting in ("aliases", "served"):  # a setting is obeyed whatever the role
        chosen = WarmRule.choose(setting, role="gateway", others=["b:8000"], recent_seconds=RECENT)
        assert chosen.mode == setting and f"GATEWAY_WARM_START={setting}" in chosen.describe()


def test_alone_with_a_registry_that_fits_every_warm_alias_is_warmed() -> None:
    rule = WarmRule("aliases", "test", RECENT)
    routes = [route(f"m{i}", 1) for i in (3, 1, 2)]
    plan = plan_start(
        rule, routes=routes, target=target_of, history=[], current=servable, max_models=16, max_bytes=2**30
    )
    assert [r.name for r in plan.aliases] == ["m1", "m2", "m3"] and plan.versions == []
    assert plan.summary == "warmed 3 versions (warm aliases' targets)"


def test_alone_with_more_champions_than_fit_warms_the_most_recently_served_first() -> None:
    rule = WarmRule("aliases", "test", RECENT)
    routes = [route(f"m{i:02d}", 1) for i in range(40)]
    history = [Served(vid("m30", 1), 100, last_served=2000.0), Served(vid("m05", 1), 100, last_served=1000.0)]
    plan = plan_start(
        rule, routes=routes, target=target_of, history=history, current=servable, max_models=10, max_bytes=2**30
    )
    # the two served ones first (most recent first), then the others by name, 10 in all
    assert [r.name for r in plan.aliases] == ["m30", "m05", "m00", "m01", "m02", "m03", "m04", "m06", "m07", "m08"]
    assert plan.candidates == 40
    assert (
        plan.summary
        == "warmed 10 of 40 versions (warm aliases' targets): what fits the cache, most recently served first"
    )


def test_the_byte_budget_counts_the_sizes_measured_before() -> None:
    rule = WarmRule("aliases", "test", RECENT)
    routes = [route("big", 1), route("small", 1), route("unknown", 1)]
    history = [Served(vid("big", 1), 900, last_served=3.0), Served(vid("small", 1), 200, last_served=2.0)]
    plan = plan_start(
        rule, routes=routes, target=target_of, history=history, current=servable, max_models=16, max_bytes=1000
    )
    # big (900) fits; small (200) would pass 1000; a size never measured counts as nothing
    assert [r.name for r in plan.aliases] == ["big", "unknown"]


def test_a_replica_with_no_history_warms_nothing() -> None:
    rule = WarmRule("served", "test", RECENT)
    plan = plan_start(
        rule, routes=[route("m1", 1)], target=target_of, history=[], current=servable, max_models=16, max_bytes=2**30
    )
    assert plan.aliases == [] and plan.versions == [] and plan.models == set()
    assert "served nothing lately" in plan.summary


def test_a_replica_warms_what_it_served_aliases_at_their_target_and_versions_still_current() -> None:
    rule = WarmRule("served", "test", RECENT)
    routes = [route("hot", 2), route("cold", 1)]  # cold: never served here
    history = [
        Served(vid("hot", 1), 10, last_served=50.0),  # served before the alias moved to 2
        Served(vid("pinned", 3), 10, last_served=40.0),  # asked for by number
        Served(vid("gone", 1), 10, last_served=60.0),  # deleted or re-created since
        Served(vid("hot", 2), 10, last_served=30.0),  # the alias's target: warmed by the alias
    ]
    plan = plan_start(
        rule,
        routes=routes,
        target=target_of,
        history=history,
        current=lambda v: None if v.name == "gone" else v,
        max_models=16,
        max_bytes=2**30,
    )
    assert [(r.name, r.version) for r in plan.aliases] == [("hot", 2)]
    assert plan.versions == [vid("hot", 1), vid("pinned", 3)]
    assert plan.models == {"hot", "pinned"}


def test_two_aliases_on_one_version_count_once_against_the_budget() -> None:
    rule = WarmRule("aliases", "test", RECENT)
    routes = [route("m", 1, "champion"), route("m", 1, "stable"), route("n", 1)]
    plan = plan_start(
        rule, routes=routes, target=target_of, history=[], current=servable, max_models=2, max_bytes=2**30
    )
    assert sorted((r.name, r.alias) for r in plan.aliases) == [("m", "champion"), ("m", "stable"), ("n", "champion")]
