"""Label selectors (Cilium sources, the four operators) against a naive evaluation, and the compiler's label
index never missing or inventing a match."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.identity.labels import Label, LabelSet
from palisade.policy.compiler import _Index
from palisade.policy.model import OPERATORS, Requirement, Selector

SOURCES = ["k8s", "reserved", "any"]
KEYS = ["app", "tier", "io.kubernetes.pod.namespace"]
VALUES = ["a", "b", "c", ""]

label_st = st.builds(
    Label, st.sampled_from(["k8s", "reserved", "container"]), st.sampled_from(KEYS), st.sampled_from(VALUES)
)
labels_st = st.builds(LabelSet, st.lists(label_st, max_size=5))


@st.composite
def requirement_st(draw: st.DrawFn) -> Requirement:
    op = draw(st.sampled_from(OPERATORS))
    values: tuple[str, ...] = ()
    if op in ("In", "NotIn"):
        values = tuple(sorted(set(draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=3)))))
    return Requirement(draw(st.sampled_from(SOURCES)), draw(st.sampled_from(KEYS)), op, values)


selector_st = st.builds(lambda rs: Selector(tuple(sorted(set(rs)))), st.lists(requirement_st(), max_size=3))


def naive(sel: Selector, labels: LabelSet) -> bool:
    for r in sel.requirements:
        vals = [la.value for la in labels.labels if la.key == r.key and r.source in ("any", la.source)]
        ok = {
            "In": any(v in r.values for v in vals),
            "NotIn": all(v not in r.values for v in vals),
            "Exists": len(vals) > 0,
            "DoesNotExist": len(vals) == 0,
        }[r.operator]
        if not ok:
            return False
    return True


@settings(max_examples=400, deadline=None)
@given(selector_st, labels_st)
def test_selector_matches_like_the_naive_definition(sel: Selector, labels: LabelSet) -> None:
    assert sel.matches(labels) == naive(sel, labels)


@settings(max_examples=200, deadline=None)
@given(st.lists(selector_st, min_size=1, max_size=8), labels_st)
def test_index_returns_exactly_the_matching_selectors(selectors: list[Selector], labels: LabelSet) -> None:
    idx = _Index()
    objs = [object() for _ in selectors]
    for o, s in zip(objs, selectors, strict=True):
        idx.add(o, s)
    by_obj = dict(zip(map(id, objs), selectors, strict=True))
    got = {id(o) for o in idx.matching(labels, lambda o: by_obj[id(o)].matches(labels))}
    assert got == {id(o) for o, s in zip(objs, selectors, strict=True) if naive(s, labels)}
    idx.remove(objs[0])
    assert id(objs[0]) not in {id(o) for o in idx.matching(labels, lambda o: True)}
