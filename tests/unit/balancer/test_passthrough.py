"""The l4 plan: stable buckets and slots, and the nftables batch that holds them (marks, timeouts, guards)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.balancer.core.passthrough import (
    BUCKET_BASE,
    MAX_SLOT,
    L4Target,
    Plan,
    TableSpec,
    VmFlows,
    counter_name,
    create_batch,
    make_plan,
    plan_buckets,
    plan_slots,
    reset_batch,
    ruleset,
    timeout_command,
)
from services.balancer.core.passthrough_reading import count_flows, read_counters, read_drops, vm_flows

SPEC = TableSpec(vip="10.77.0.10", port=8443, vm_network="10.78.0.0/24")


def target(index: int) -> L4Target:
    return L4Target(f"vm{index}", f"10.78.0.{10 + index}", 8443)


def rules(batch: dict[str, Any], chain: str) -> list[list[dict[str, Any]]]:
    """The expressions of every rule the batch adds to `chain`."""
    found = [c["add"]["rule"] for c in batch["nftables"] if "rule" in c.get("add", {})]
    return [rule["expr"] for rule in found if rule["chain"] == chain]


def added(batch: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [c["add"][kind] for c in batch["nftables"] if kind in c.get("add", {})]


def elements(batch: dict[str, Any], name: str) -> list[Any]:
    return [e for body in added(batch, "element") if body["name"] == name for e in body["elem"]]


def test_no_targets_make_an_empty_table() -> None:
    """With no VM to send new flows to, the bucket table is empty."""
    assert plan_buckets(None, [], 256) == ()
    assert plan_buckets(("a",) * 256, [], 256) == ()


def test_buckets_are_shared_evenly() -> None:
    """Each target holds count // n buckets, or one more."""
    counts = Counter(plan_buckets(None, ["a", "b", "c"], 256))
    assert sorted(counts.values()) == [85, 85, 86]


def test_adding_a_target_moves_only_the_buckets_it_takes() -> None:
    """A bucket either keeps its VM or goes to the VM just added."""
    before = plan_buckets(None, ["a", "b", "c"], 256)
    after = plan_buckets(before, ["a", "b", "c", "d"], 256)
    moved = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert {new for _, new in moved} == {"d"}
    assert len(moved) == 64


def test_removing_a_target_moves_only_its_buckets() -> None:
    """Only the buckets of the VM that left change hands."""
    before = plan_buckets(None, ["a", "b", "c"], 256)
    after = plan_buckets(before, ["a", "c"], 256)
    assert all(old == new for old, new in zip(before, after, strict=True) if old != "b")
    assert "b" not in after and sorted(Counter(after).values()) == [128, 128]


@given(st.lists(st.sets(st.sampled_from("abcdefgh"), min_size=1), min_size=2, max_size=8))
def test_any_change_keeps_balance_and_moves_no_bucket_without_need(steps: list[set[str]]) -> None:
    """Through any sequence of target sets, shares stay within one, and a bucket moves only when its VM left
    or held more than its share."""
    table = plan_buckets(None, sorted(steps[0]), 64)
    for names in steps[1:]:
        after = plan_buckets(table, sorted(names), 64)
        counts = Counter(after)
        assert set(counts) == names and max(counts.values()) - min(counts.values()) <= 1
        for old, new in zip(table, after, strict=True):
            if old != new:
                assert old not in names or Counter(table)[old] > counts[old]
        table = after


def test_slots_are_stable_and_not_reused_at_once() -> None:
    """A VM keeps its slot; a new VM gets the next slot, not the one just freed."""
    slots, last = plan_slots({}, 0, ["a", "b"])
    assert slots == {"a": 1, "b": 2}
    slots, last = plan_slots(slots, last, ["b", "c"])
    assert slots == {"b": 2, "c": 3} and last == 3


def test_slots_wrap_below_the_bucket_marks() -> None:
    """After slot 65535 the next free one from 1 is used: a slot never reaches the buckets' marks."""
    slots, last = plan_slots({"a": 1}, MAX_SLOT, ["a", "b"])
    assert slots == {"a": 1, "b": 2} and last == 2 and BUCKET_BASE > MAX_SLOT


def test_a_kept_vm_stays_a_member_outside_the_buckets() -> None:
    """A VM left out of the targets but kept (it still has flows) keeps its slot and leaves the buckets."""
    first = make_plan(None, [target(0), target(1)], 16)
    draining = make_plan(first, [target(1)], 16, keep={"vm0"})
    assert set(draining.buckets) == {"vm1"}
    assert [m.vm for m in draining.members] == ["vm0", "vm1"] and draining.slots == first.slots
    gone = make_plan(draining, [target(1)], 16, keep=set())
    assert [m.vm for m in gone.members] == ["vm1"] and gone.slots == {"vm1": first.slots["vm1"]}


def test_the_same_targets_make_the_same_plan() -> None:
    """Applying what is already there changes nothing (the glue then writes nothing)."""
    plan = make_plan(None, [target(0), target(1)], 256)
    assert make_plan(plan, [target(1), target(0)], 256, keep={"vm0", "vm1"}) == plan


def test_marks_follow_the_bpf_contract() -> None:
    """Marks 1..65535 DNAT through the slot maps; otherwise the hash sets BUCKET_BASE + bucket, then DNAT by it."""
    plan = make_plan(None, [target(0), target(1)], 256)
    batch = ruleset(SPEC, plan)
    by_slot, hashed, by_bucket = rules(batch, "dnat")
    assert {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": {"range": [1, MAX_SLOT]}}} in by_slot
    assert by_slot[-1]["dnat"]["addr"]["map"]["data"] == "@slot_addr"
    jhash = hashed[-1]["mangle"]["value"]["jhash"]
    assert jhash["offset"] == BUCKET_BASE and jhash["mod"] == 256
    assert by_bucket[-1]["dnat"]["port"]["map"]["data"] == "@bucket_port"
    marks = [mark for mark, _ in elements(batch, "bucket_addr")]
    assert marks == [BUCKET_BASE + index for index in range(256)]
    assert sorted(slot for slot, _ in elements(batch, "slot_addr")) == sorted(plan.slots.values())


def test_ct_timeout_is_set_at_filter_priority_after_the_dnat() -> None:
    """The timeout policy is attached from a prerouting chain at priority filter (at raw there is no entry yet)."""
    batch = ruleset(SPEC, make_plan(None, [target(0)], 8))
    chain = next(c for c in added(batch, "chain") if c["name"] == "timeouts")
    assert chain["hook"] == "prerouting" and chain["prio"] == 0
    (rule,) = rules(batch, "timeouts")
    assert rule[-1] == {"ct timeout": SPEC.timeout_name}
    assert "replied: 600" in timeout_command(SPEC) and "protocol udp" in timeout_command(SPEC)


def test_un_nated_vm_replies_are_dropped_and_dnated_flows_accepted() -> None:
    """The forward chain drops a member's (and the VM network's) UDP without DNAT and accepts DNAT'ed flows."""
    batch = ruleset(SPEC, make_plan(None, [target(0)], 8))
    forward = rules(batch, "forward")
    unnated = {"match": {"op": "!", "left": {"ct": {"key": "status"}}, "right": "dnat"}}
    drops = [rule for rule in forward if rule[-1] == {"drop": None}]
    assert len(drops) == 2 and all(unnated in rule and {"counter": "unnated_drops"} in rule for rule in drops)
    assert any("prefix" in json.dumps(rule) for rule in drops)
    assert forward[-1][-1] == {"accept": None}


def test_every_member_has_a_counter_and_a_gone_one_is_deleted() -> None:
    """Counters are named by slot and mapped from the VM's address.port; a VM that left loses its counter."""
    first = make_plan(None, [target(0), target(1)], 8)
    batch = ruleset(SPEC, first)
    assert {c["name"] for c in added(batch, "counter")} == {"vm_1", "vm_2", "unnated_drops"}
    assert [e[1] for e in elements(batch, "vm_counters")] == ["vm_1", "vm_2"]
    second = make_plan(first, [target(1)], 8)
    deleted = [c["delete"]["counter"]["name"] for c in ruleset(SPEC, second, first)["nftables"] if "delete" in c]
    assert deleted == [counter_name(first.slots["vm0"])]


def test_the_batch_flushes_before_it_refills() -> None:
    """Rules and elements are flushed in the same transaction before they are written again."""
    commands = ruleset(SPEC, make_plan(None, [target(0)], 8))["nftables"]
    flushes = [index for index, c in enumerate(commands) if "flush" in c]
    first_element = next(index for index, c in enumerate(commands) if "element" in c.get("add", {}))
    assert flushes and max(flushes) < first_element
    assert {"flush": {"map": {"family": "inet", "table": "quicfleet_l4", "name": "bucket_addr"}}} in commands


def test_create_and_reset_delete_a_stale_table() -> None:
    """Start deletes whatever table is there (adding it first so the delete cannot fail) and adds a fresh one."""
    table = {"family": "inet", "name": "quicfleet_l4"}
    assert reset_batch(SPEC)["nftables"] == [{"add": {"table": table}}, {"delete": {"table": table}}]
    assert create_batch(SPEC)["nftables"][-1] == {"add": {"table": table}}


def test_flows_are_counted_by_the_answering_vm() -> None:
    """Conntrack lines count for the VM in their reply direction; counters give packets and bytes."""
    plan = make_plan(None, [target(0), target(1)], 8)
    lines = (
        "udp      17 599 src=10.77.0.2 dst=10.77.0.10 sport=5000 dport=8443 src=10.78.0.10 dst=10.77.0.2 "
        "sport=8443 dport=5000 [ASSURED] mark=0 use=1\n"
        "udp      17 20 src=10.77.0.2 dst=10.77.0.10 sport=5001 dport=8443 src=10.78.0.10 dst=10.77.0.2 "
        "sport=8443 dport=5001 mark=0 use=1\n"
        "udp      17 20 src=10.77.0.2 dst=10.77.0.10 sport=5002 dport=8443 [UNREPLIED] src=10.77.0.10 "
        "dst=10.77.0.2 sport=8443 dport=5002 mark=0 use=1\n"
    )
    entries = count_flows(lines, plan)
    assert entries == {"vm0": 2, "vm1": 0}
    listing = {"nftables": [{"metainfo": {}}, {"counter": {"name": "vm_1", "packets": 7, "bytes": 700}}]}
    assert vm_flows(plan, entries, read_counters(listing, plan)) == {"vm0": VmFlows(2, 7, 700), "vm1": VmFlows()}
    assert read_drops({"nftables": [{"counter": {"name": "unnated_drops", "packets": 3, "bytes": 90}}]}) == 3


def test_a_flow_silent_longer_than_the_live_window_no_longer_counts() -> None:
    """With the spec an entry counts only while a packet passed within `live_within_s` (or the VM has not answered)."""
    plan = make_plan(None, [target(0)], 8)
    spec = TableSpec(vip="10.77.0.10", port=8443, conntrack_timeout_s=600, live_within_s=30)
    reply = "src=10.78.0.10 dst=10.77.0.2 sport=8443 dport={p} [ASSURED] mark=0 use=1"
    lines = "".join(
        f"udp      17 {left} src=10.77.0.2 dst=10.77.0.10 sport={p} dport=8443 {reply.format(p=p)}\n"
        for p, left in ((5000, 599), (5001, 571), (5002, 569))
    ) + ("udp      17 29 src=10.77.0.2 dst=10.77.0.10 sport=5003 dport=8443 [UNREPLIED] src=10.78.0.10 "
         "dst=10.77.0.2 sport=8443 dport=5003 mark=0 use=1\n")
    assert count_flows(lines, plan, spec) == {"vm0": 3}
    assert count_flows(lines, plan) == {"vm0": 4}


def test_an_ipv6_vip_uses_ip6_matches() -> None:
    """A VIP of family 6 makes ip6 payload matches and ipv6 maps."""
    spec = TableSpec(vip="fd00::10", port=443)
    plan = Plan()
    batch = ruleset(spec, plan)
    assert rules(batch, "dnat")[0][0]["match"]["left"]["payload"]["protocol"] == "ip6"
    assert next(m for m in added(batch, "map") if m["name"] == "bucket_addr")["map"] == "ipv6_addr"
