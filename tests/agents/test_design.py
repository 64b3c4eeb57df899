"""The designer (deterministic, never repeats an assessed configuration) and the assessment of a backtest."""

from __future__ import annotations

import pytest

from agents.design import (
    SEARCH_SPACE,
    Assessed,
    SearchSpaceExhausted,
    Thresholds,
    all_configurations,
    assess,
    configuration_key,
    propose,
)

SMALL = {"a": (1, 2, 3), "b": ([1], [2, 3])}  # six configurations


def test_a_configuration_has_one_choice_per_dimension_of_the_search_space():
    configuration = propose(seed=0, assessed=[])

    assert set(configuration) == set(SEARCH_SPACE)
    assert all(configuration[name] in SEARCH_SPACE[name] for name in SEARCH_SPACE)


def test_the_same_seed_and_assessments_give_the_same_proposal():
    earlier = [Assessed(propose(seed=3, assessed=[]), score=0.1)]

    assert propose(seed=3, assessed=[]) == propose(seed=3, assessed=[])
    assert propose(seed=3, assessed=earlier) == propose(seed=3, assessed=list(earlier))


def test_seeds_spread_the_first_proposals_over_the_space():
    firsts = {configuration_key(propose(seed=seed, assessed=[])) for seed in range(20)}

    assert len(firsts) > 15


def test_the_key_does_not_depend_on_the_order_of_the_choices():
    assert configuration_key({"a": 1, "b": [2, 3]}) == configuration_key({"b": [2, 3], "a": 1})
    assert configuration_key({"a": 1, "b": [2, 3]}) != configuration_key({"a": 1, "b": [3, 2]})


def test_after_an_assessment_the_proposal_is_next_to_the_best_configuration():
    first = propose(seed=1, assessed=[], space=SMALL)
    worse = next(c for c in all_configurations(SMALL) if all(c[name] != first[name] for name in SMALL))

    proposal = propose(seed=1, assessed=[Assessed(first, 0.5), Assessed(worse, -0.2)], space=SMALL)

    assert sum(proposal[name] != first[name] for name in SMALL) == 1  # one dimension changed, from the best


@pytest.mark.parametrize("seed", range(5))
def test_no_configuration_is_proposed_twice_until_the_space_is_exhausted(seed):
    assessed: list[Assessed] = []
    seen = set()
    for index in range(len(all_configurations(SMALL))):
        configuration = propose(seed=seed, assessed=assessed, space=SMALL)
        key = configuration_key(configuration)
        assert key not in seen
        seen.add(key)
        assessed.append(Assessed(configuration, score=(index * 7919 % 13) / 13))  # scores in no order

    with pytest.raises(SearchSpaceExhausted, match="all 6 configurations"):
        propose(seed=seed, assessed=assessed, space=SMALL)


def test_a_configuration_taken_by_a_running_session_is_not_proposed():
    first = propose(seed=2, assessed=[], space=SMALL)

    assert propose(seed=2, assessed=[], taken=[first], space=SMALL) != first


METRICS = {"total_return": 0.25, "buy_and_hold_return": 0.10, "sharpe": 1.2, "max_drawdown": 0.12,
           "number_of_trades": 40}


def test_a_backtest_that_passes_every_check_is_accepted_with_its_reasons():
    verdict = assess(METRICS)

    assert verdict.accepted and verdict.verdict == "accepted"
    assert verdict.score == pytest.approx(0.15)
    assert verdict.reasons == [
        "passed: Sharpe 1.20 ≥ 0.5",
        "passed: maximum drawdown 12.0% ≤ 30%",
        "passed: 40 trades ≥ 10",
        "passed: total return +25.0% > buy-and-hold +10.0%",
    ]


@pytest.mark.parametrize(("change", "failed"), [
    ({"sharpe": 0.2}, "failed: Sharpe 0.20 < 0.5"),
    ({"sharpe": None}, "failed: Sharpe none < 0.5"),
    ({"max_drawdown": 0.45}, "failed: maximum drawdown 45.0% > 30%"),
    ({"number_of_trades": 3}, "failed: 3 trades < 10"),
    ({"total_return": 0.05}, "failed: total return +5.0% ≤ buy-and-hold +10.0%"),
])
def test_a_failed_check_rejects_and_says_which(change, failed):
    verdict = assess({**METRICS, **change})

    assert not verdict.accepted and verdict.verdict == "rejected"
    assert failed in verdict.reasons
    assert sum(reason.startswith("failed") for reason in verdict.reasons) == 1


def test_thresholds_can_be_set_and_buy_and_hold_left_out():
    verdict = assess({**METRICS, "total_return": 0.05}, Thresholds(min_sharpe=1.5, beat_buy_and_hold=False))

    assert verdict.reasons == [
        "failed: Sharpe 1.20 < 1.5",
        "passed: maximum drawdown 12.0% ≤ 30%",
        "passed: 40 trades ≥ 10",
    ]


# --- with the database: what the designer learns from


@pytest.mark.django_db
def test_a_second_session_proposes_another_configuration_once_the_first_is_assessed(operation_factory):
    from agents.models import Assessment
    from agents.services import assessment_record, earlier_assessments

    first_session = operation_factory(operation_type="agent_research", is_backend_local=True)
    first = propose(seed=9, assessed=earlier_assessments(first_session.owner_id))
    recorded = assessment_record(session=first_session, configuration=first, metrics=METRICS, verdict=assess(METRICS))
    again = assessment_record(session=first_session, configuration=first, metrics={}, verdict=assess(METRICS))

    second = propose(seed=9, assessed=earlier_assessments(first_session.owner_id))

    assert second != first
    assert again == recorded and Assessment.objects.count() == 1  # recorded once, however often it is asked
    assert (recorded.verdict, recorded.score, recorded.configuration_key) == ("accepted", pytest.approx(0.15),
                                                                             configuration_key(first))


@pytest.mark.django_db
def test_the_designer_sees_only_its_owners_assessments(operation_factory, user, other_user):
    """One user's results neither reveal another's best configuration nor use up their search space."""
    from agents.services import assessment_record, earlier_assessments

    theirs = operation_factory(operation_type="agent_research", is_backend_local=True, owner=other_user)
    best = propose(seed=9, assessed=[])
    assessment_record(session=theirs, configuration=best, metrics=METRICS, verdict=assess(METRICS))
    mine = operation_factory(operation_type="agent_research", is_backend_local=True, owner=user)

    assert earlier_assessments(user.pk) == [] and earlier_assessments(None) == []
    assert [found.configuration for found in earlier_assessments(other_user.pk)] == [best]
    assert propose(seed=9, assessed=earlier_assessments(user.pk)) == best  # not used up by the other user
    recorded = assessment_record(session=mine, configuration=best, metrics=METRICS, verdict=assess(METRICS))
    assert recorded.owner == user  # the same configuration, assessed once per owner
    assert recorded.reasons[0] == "passed: Sharpe 1.20 ≥ 0.5"


@pytest.mark.django_db
def test_a_configuration_is_assessed_once_at_most(operation_factory):
    from django.db import IntegrityError, transaction

    from agents.services import assessment_record

    configuration = propose(seed=0, assessed=[])
    session = operation_factory(operation_type="agent_research", is_backend_local=True)
    assessment_record(session=session, configuration=configuration, metrics=METRICS, verdict=assess(METRICS))

    with pytest.raises(IntegrityError), transaction.atomic():
        assessment_record(session=operation_factory(), configuration=configuration, metrics=METRICS,
                          verdict=assess(METRICS))
