"""The fleet as ``registry-gateway status`` prints it (gateway.status_report), from /fleet's JSON."""

from __future__ import annotations

from typing import Any

from gateway.status_report import Report, counted, fleet_lines, render


def process(state: str, *, role: str = "gateway", quiet: bool = False, seen: float = 1.0) -> dict[str, Any]:
    return {"member": f"m-{state}", "role": role, "state": state, "quiet": quiet, "seen_seconds_ago": seen}


FLEET = {
    "this_replica": "b:8000",
    "replicas": [
        {
            "replica": "a:8000",
            "state": "ready",
            "loaded_bytes": 3 * 2**20,
            "budget_bytes": 2 * 2**30,
            "models": ["iris", "m1", "m2", "m3", "m4", "m5"],
            "processes": [process("ready", seen=0.4), process("stopped", seen=900)],
        },
        {
            "replica": "b:8000",
            "state": "draining",
            "loaded_bytes": 0,
            "budget_bytes": 2**30,
            "models": [],
            "processes": [process("draining")],
        },
        {
            "replica": "c:8000",
            "state": "quiet",
            "loaded_bytes": 0,
            "budget_bytes": 2**30,
            "models": [],
            "processes": [process("ready", quiet=True, seen=42.0)],
        },
        {
            "replica": "s:8000",
            "state": "ready",
            "loaded_bytes": 0,
            "budget_bytes": 0,
            "models": [],
            "processes": [process("ready", role="sync")],
        },
    ],
    "models": [],
}


def test_the_fleet_section_orders_replicas_and_names_the_quiet_ones() -> None:
    report = Report(url="http://b:8000", health={"status": "stopping"}, fleet=FLEET)
    text = render(report)
    section = text[text.index("fleet:") :].splitlines()
    assert section[0] == "fleet: 4 replicas on this state database, 1 gone quiet (c:8000); this is b:8000"
    assert section[1] == "REPLICA\tSTATE\tPROCESSES\tMEMORY\tMODELS\tLAST HEARD"
    rows = [line.split("\t") for line in section[2:6]]
    assert [row[0] for row in rows] == ["a:8000", "s:8000", "b:8000 (this one)", "c:8000"]
    assert rows[0] == ["a:8000", "ready", "1", "3.0 MiB of 2.0 GiB", "iris, m1, m2, m3 and 2 more", "0.4 s ago"]
    assert rows[1][1] == "ready (sync)" and rows[1][3] == "-"
    assert rows[3][1:3] == ["quiet", "0"] and rows[3][5] == "42 s ago"


def test_a_count_of_one_reads_in_the_singular() -> None:
    assert (counted(1, "replica"), counted(3, "replica"), counted(0, "use")) == ("1 replica", "3 replicas", "0 uses")
    lone = {"this_replica": "a:8000", "replicas": [{"replica": "a:8000", "state": "ready", "processes": []}]}
    assert fleet_lines(lone)[0] == "fleet: 1 replica on this state database; this is a:8000"
