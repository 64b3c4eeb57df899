"""Fuzz every operation of the API against the schema the app serves: as a user, as staff, as a worker machine
(its credential: the worker endpoints) and without a credential.

For each operation schemathesis generates requests (valid and invalid ones, deterministically) and checks that
no response is a 5xx and that every response is documented: its status code, its content type, its body and
its headers. Identifiers in paths and bodies are drawn partly from the data present, so cancel, resume,
delete, register and heartbeat reach real operations and workers, not only 400s and 404s; the data is put
back as it was made before each operation is fuzzed (tests/fuzz/conftest.py).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st

from tests.fuzz.conftest import SYMBOL, TIMEFRAME, FuzzData

# Examples per operation of the fuzzing phase; the coverage phase adds its own deterministic cases (boundaries,
# wrong types, missing fields). FUZZ_MAX_EXAMPLES raises it for a deeper run by hand.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "15"))
ROLES = ["user", "staff", "worker", "anonymous"]
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]


def config_for(role: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "seed": 20240301,
        "suppress-health-check": ["all"],
        "generation": {
            "mode": "all",  # valid requests, and invalid ones that must be refused with a documented 4xx
            "deterministic": True,
            "database": "none",  # no example database (and Hypothesis's caches: a temporary folder, conftest)
            "max-examples": MAX_EXAMPLES,
            "with-security-parameters": False,  # the token is ours, not generated
        },
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
    }
    if role == "anonymous":  # refused before anything is read: a few cases show each refusal is documented
        config["phases"]["coverage"]["enabled"] = False
        config["generation"]["max-examples"] = 3
        return config
    # The first entry that matches an operation wins. Operations on one operation or worker are cheap, and with
    # ids drawn from the data they act on real ones (cancel, resume, delete, heartbeat, register): more examples.
    config["operations"] = [{"include-path-regex": "{(operation_id|worker_id)}|/workers/register/",
                             "generation": {"max-examples": max(30, MAX_EXAMPLES)}}]
    if role == "worker":  # a worker credential is for the worker endpoints: elsewhere it is no credential
        config["operations"][:0] = [{"include-path-regex": "^/api/v1/(?!workers/)", "enabled": False}]
    if role == "user":
        config["operations"][:0] = [
            # A user's request to a worker or staff endpoint is refused before its body is read.
            {"include-path-regex": "^/api/v1/(workers/|checkpoints/cleanup/)",
             "phases": {"coverage": {"enabled": False}}, "generation": {"max-examples": 5}},
            # A request body is validated the same whoever sends it: the staff run covers its boundaries and types.
            {"include-path-regex": "^/api/v1/(training|backtests|agents/sessions)/$",
             "phases": {"coverage": {"enabled": False}}},
        ]
    return config


def known_path_parameters(data: FuzzData):
    """An id of the data present in place of a generated one, for the path parameters that name one."""
    known = {"operation_id": st.sampled_from(data.operation_ids), "worker_id": st.sampled_from(data.worker_ids)}

    def before_generate_path_parameters(context, strategy):
        names = [parameter.name for parameter in context.operation.path_parameters]
        if not names or any(name not in known for name in names):
            return strategy
        return st.one_of(strategy, st.fixed_dictionaries({name: known[name] for name in names}))

    return before_generate_path_parameters


def known_body_values(data: FuzzData):
    """In two generated bodies out of three, known ids and the series present: reports and heartbeats reach real
    operations, new operations real market data."""
    operation_id = st.sampled_from(data.operation_ids)
    series = {"symbol": st.just(SYMBOL), "timeframe": st.just(TIMEFRAME)}
    replacements: dict[str, dict[str, Any]] = {
        "/api/v1/workers/register/": {"worker_id": st.sampled_from(data.worker_ids),
                                      "current_operation_id": operation_id},
        "/api/v1/workers/{worker_id}/heartbeat/": {"operation_id": operation_id},
        "/api/v1/training/": series,
        "/api/v1/backtests/": {**series, "model": st.just(data.completed_training_id)},
        "/api/v1/agents/sessions/": series,
    }

    def flatmap_body(context, body):
        fields = replacements.get(context.operation.path)
        if not fields or not isinstance(body, dict):
            return st.just(body)
        chosen = {name: value for name, value in fields.items() if name in body}
        reports = body.get("completed_operations")
        if isinstance(reports, list) and all(isinstance(report, dict) for report in reports):
            chosen["completed_operations"] = st.tuples(*[operation_id for _ in reports]).map(
                lambda ids: [{**report, "operation_id": known} for report, known in zip(reports, ids)]
            )
        replaced = st.fixed_dictionaries(chosen).map(lambda values: {**body, **values})
        return st.sampled_from([True, True, False]).flatmap(lambda replace: replaced if replace else st.just(body))

    return flatmap_body


@pytest.fixture(params=ROLES)
def api_schema(request, live_server, fuzz_data: FuzzData):
    """The schema as the live server serves it, fuzzed with the role's credential (anonymous: none)."""
    config = schemathesis.Config.from_dict(config_for(request.param))
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema/", config=config)
    authorization = fuzz_data.authorization.get(request.param)
    schema.config.update(base_url=live_server.url,
                         headers={"Authorization": authorization} if authorization else None)
    schema.hook(known_path_parameters(fuzz_data))
    schema.hook(known_body_values(fuzz_data))
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def reached(request, fuzz_data: FuzzData):
    """After the run: a credential was never refused, and as staff every operation answered a 2xx at least once,
    so the cases reached the API's work rather than only its refusals (which pass the checks too)."""
    yield
    role = request.node.callspec.params["api_schema"]
    if role == "anonymous" or not fuzz_data.statuses:
        return  # nothing to say of refusals, or of a run that failed before any response
    refused = sorted(label for label, codes in fuzz_data.statuses.items() if codes[401])
    assert not refused, f"The {role}'s token was refused: {refused}"
    if role == "staff":
        unreached = sorted(label for label, codes in fuzz_data.statuses.items()
                           if not any(200 <= code < 300 for code in codes))
        assert not unreached, f"No case succeeded: {unreached}"


def redundant(case) -> bool:
    """A coverage case of a multipart body: DRF hands multipart and urlencoded forms to the serializers as the
    same QueryDict, and the coverage phase's urlencoded cases already go through each field (the fuzzing phase
    sends all three media types)."""
    return case.meta is not None and case.meta.phase.name == "coverage" and case.media_type == "multipart/form-data"


@pytest.mark.process  # a live server; about a minute
@schema.parametrize()
def test_api(case, fuzz_data: FuzzData, reached):
    if redundant(case):
        return
    fuzz_data.fresh_for(case.operation.label)
    response = case.call_and_validate(checks=CHECKS)
    fuzz_data.statuses[case.operation.label][response.status_code] += 1


# --- what the fuzzing found, pinned


@pytest.mark.django_db
@pytest.mark.parametrize("days", [36_501, 999_999, 1e10, 5.787858101544628e307])
def test_an_age_too_large_to_compute_a_cutoff_is_a_400(staff_client, days):
    """It was a 500: `now - timedelta(days=…)` overflows before year 1 (or timedelta itself does)."""
    listed = staff_client.get("/api/v1/checkpoints/", {"older_than_days": days})
    cleaned = staff_client.post("/api/v1/checkpoints/cleanup/", {"max_age_days": days}, format="json")

    for response, field_name in ((listed, "older_than_days"), (cleaned, "max_age_days")):
        assert response.status_code == 400, response.content
        assert response.json()["code"] == "VALIDATION_ERROR"
        assert response.json()["detail"].startswith(f"Invalid value for field '{field_name}':")
