"""Fuzzing a running server: schemathesis drives every operation /openapi.json documents (no
response may be a 5xx), and hypothesis builds prompts out of the server's own node schemas, so
submissions get past "unknown node type" into validation, queueing and execution."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.server.conftest import RunningServer, start_server

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402

# Whether a run has fuzzed every operation the document has.
PATH_PARAMETER = re.compile(r"\{([^}]+)\}")
# Node types a generated prompt may use: the quick ones (TestSlow/TestCrash would only make the
# worker sleep or restart), plus a name no worker knows.
FUZZ_NODE_TYPES = ["TestColor", "TestSave", "TestFail", "NoSuchNode"]
QUICK = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
# At least 100 examples per operation (fewer only where an operation has fewer distinct inputs).
THOROUGH = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("fuzz"))
    yield running
    # Whatever the fuzzer queued must not keep the worker busy after the module.
    httpx.post(f"{running.url}/queue", json={"clear": True})
    httpx.post(f"{running.url}/interrupt")
    running.stop()
    log = next(running.base.glob("server-*.log")).read_text()
    assert "Traceback" not in log, log[-4000:]


def undeclared_paths(document: dict[str, Any]) -> list[str]:
    """Path templates with a ``{parameter}`` that none of their operations declares, which
    schemathesis rejects as a schema error (the frontend's /userdata/{name} routes, until they
    declare it); every other operation is fuzzed."""
    found = []
    for path, operations in document["paths"].items():
        for operation in operations.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "path"}
            if set(PATH_PARAMETER.findall(path)) - declared:
                found.append(path)
                break
    return found


@pytest.fixture
def api_schema(fuzz_server: RunningServer) -> Any:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    undeclared = undeclared_paths(httpx.get(f"{fuzz_server.url}/openapi.json").json())
    return schema.exclude(path_regex="|".join(f"^{re.escape(p)}$" for p in undeclared)) if undeclared else schema


schema = schemathesis.pytest.from_fixture("api_schema")


def test_schemathesis_version_is_4() -> None:
    assert int(schemathesis.SCHEMATHESIS_VERSION.split(".")[0]) >= 4


def test_openapi_describes_the_post_bodies(fuzz_server: RunningServer) -> None:
    document = httpx.get(f"{fuzz_server.url}/openapi.json").json()
    body = document["paths"]["/prompt"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    prompt = body["properties"]["prompt"]
    titles = [variant.get("title") for variant in prompt["anyOf"]]
    assert titles == ["API-format prompt", "UI-format workflow"]
    assert prompt["anyOf"][0]["additionalProperties"]["required"] == ["class_type", "inputs"]
    assert "webhook_url" in body["properties"]["extra_data"]["properties"]
    for path in ("/queue", "/history", "/interrupt", "/free"):
        assert document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]


def test_only_the_userdata_routes_lack_their_path_parameter(fuzz_server: RunningServer) -> None:
    # Fixed with issue 9's OpenAPI item; then nothing at all is left out of the fuzz runs.
    assert set(undeclared_paths(httpx.get(f"{fuzz_server.url}/openapi.json").json())) <= {"/userdata/{name}"}


@schema.parametrize()
@QUICK
def test_no_route_answers_5xx(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error], timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # every operation is one subtest of this one test
@schema.parametrize()
@THOROUGH
def test_no_route_answers_5xx_thorough(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error], timeout=30)


# -- prompts built from the node schemas -------------------------------------------------------

_SCALARS = st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=False), st.text(max_size=8),
                     st.booleans(), st.none(), st.lists(st.integers(), max_size=3))
_NODE_IDS = ["1", "2", "3", "9"]


def _value(spec: Any) -> st.SearchStrategy[Any]:
    """A value for an input declared as ``spec`` in /object_info: in range, at or past its
    bounds, of another type, or a link (to a node that may not exist, at any output index)."""
    kind, options = (spec[0], spec[1] if len(spec) > 1 else {}) if isinstance(spec, list) else (spec, {})
    link = st.tuples(st.sampled_from(_NODE_IDS), st.integers(-1, 3)).map(list)
    if kind == "INT":
        typed: st.SearchStrategy[Any] = st.integers(options.get("min", -99) - 2, options.get("max", 99) + 2)
    elif kind == "STRING":
        typed = st.text(max_size=12)
    elif isinstance(kind, list):
        typed = st.sampled_from(kind) if kind else st.text(max_size=4)
    else:
        typed = link
    return st.one_of(typed, typed, link, _SCALARS)


@st.composite
def prompts(draw: st.DrawFn, info: dict[str, Any]) -> dict[str, Any]:
    prompt: dict[str, Any] = {}
    for node_id in draw(st.lists(st.sampled_from(_NODE_IDS), min_size=1, max_size=4, unique=True)):
        class_type = draw(st.sampled_from(FUZZ_NODE_TYPES))
        declared = info.get(class_type, {}).get("input", {}).get("required", {"x": "INT"})
        inputs = {name: draw(_value(spec)) for name, spec in declared.items() if draw(st.booleans()) or
                  draw(st.booleans())}
        prompt[node_id] = {"class_type": class_type, "inputs": inputs}
    return prompt


def test_generated_prompts_get_200_or_a_400_naming_node_and_input(fuzz_server: RunningServer) -> None:
    info = httpx.get(f"{fuzz_server.url}/object_info").json()
    outcomes: set[int] = set()

    @given(prompts(info))
    @example({"1": {"class_type": "TestColor", "inputs": {"red": 255, "green": 0, "blue": 0}},
              "2": {"class_type": "TestSave", "inputs": {"color": ["1", 0], "filename_prefix": "x", "size": 1}}})
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def submit(prompt: dict[str, Any]) -> None:
        # json.dumps as Python clients send it: infinities go out as the non-standard Infinity.
        response = httpx.post(f"{fuzz_server.url}/prompt", content=json.dumps({"prompt": prompt}), timeout=30)
        outcomes.add(response.status_code)
        body = response.json()
        if response.status_code == 200:
            # As ComfyUI: the valid outputs run; any invalid ones are listed in node_errors.
            assert body["prompt_id"]
        else:
            assert response.status_code == 400, (prompt, body)
            assert body["error"]["type"] and body["error"]["message"]
        for node_id, node_error in body["node_errors"].items():
            assert node_id in prompt and node_error["class_type"] == prompt[node_id]["class_type"]
            # Accepted: each listed node stops some output that does not run.
            assert response.status_code == 400 or node_error["dependent_outputs"]
            for error in node_error["errors"]:
                assert error["type"] and error["message"]
                # Errors about the node as a whole (unknown type, a cycle through it) name no input.
                if error["type"] != "missing_node_type" and "cycle" not in error["message"]:
                    assert "input_name" in error["extra_info"], error

    submit()
    assert outcomes == {200, 400}
    assert httpx.get(f"{fuzz_server.url}/system_stats").status_code == 200
