"""Fireworks' datasets and batch inference jobs, in-process (memory store, fake engine).

The same flows run against a real server and the official SDK in
tests/integration/test_fireworks.py; these pin the exact wire shapes, the
signed URLs and the error bodies, and drive the official SDK over the test
client where a client's view matters.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fireworks
import httpx
import pytest
from fastapi.testclient import TestClient

from inferq.api.app import create_app
from inferq.api.fireworks import signing
from inferq.api.fireworks.batch_format import ERRORS, RESULTS
from inferq.blobs import MemoryBlobs
from inferq.config import Settings
from inferq.core.keys import KeyService
from inferq.engines.base import ModelSpec
from inferq.engines.fake import FAIL_TRIGGER
from inferq.engines.registry import ModelRegistry
from inferq.store.memory import MemoryStore

SECRET = "test-signing-secret"
ACCOUNT = "acme"
BASE = f"/v1/accounts/{ACCOUNT}"
FINAL = {"JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


@dataclass
class Api:
    client: TestClient
    #: Bearer headers of tenant a (the client's default) and tenant b
    a: dict[str, str]
    b: dict[str, str]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    store = MemoryStore()
    registry = ModelRegistry(
        {
            "fake": ModelSpec(name="fake", engine="fake", context_length=256, slots=2),
            "slow": ModelSpec(
                name="slow", engine="fake", context_length=256, options={"token_delay": 0.2}
            ),
        }
    )
    settings = Settings(data_dir=tmp_path, signing_key=SECRET)
    app = create_app(settings, store=store, registry=registry, blobs=MemoryBlobs())
    with TestClient(app) as client:
        keys = KeyService(store)
        _, key_a = asyncio.run(keys.create(name="alice", tenant="ta"))
        _, key_b = asyncio.run(keys.create(name="bob", tenant="tb"))
        a = {"authorization": f"Bearer {key_a}"}
        client.headers.update(a)
        yield Api(client, a, {"authorization": f"Bearer {key_b}"})


def rows(*contents: str, max_tokens: int | None = None) -> bytes:
    lines = []
    for n, content in enumerate(contents, 1):
        body: dict[str, Any] = {"messages": [{"role": "user", "content": content}]}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        lines.append(json.dumps({"custom_id": f"req-{n}", "body": body}))
    return ("\n".join(lines) + "\n").encode()


def make_dataset(
    client: TestClient, dataset_id: str, data: bytes | None = None, name: str = "input.jsonl"
) -> dict[str, Any]:
    created = client.post(
        f"{BASE}/datasets",
        json={"datasetId": dataset_id, "dataset": {"exampleCount": "3", "userUploaded": {}}},
    )
    assert created.status_code == 200, created.text
    if data is not None:
        up = client.post(f"{BASE}/datasets/{dataset_id}:upload", files={"file": (name, data)})
        assert up.status_code == 200, up.text
    body: dict[str, Any] = created.json()
    return body


def create_job(client: TestClient, job_id: str | None = None, **body: Any) -> dict[str, Any]:
    params = {"batchInferenceJobId": job_id} if job_id else {}
    response = client.post(f"{BASE}/batchInferenceJobs", params=params, json=body)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def wait_job(client: TestClient, job_id: str, states: set[str] = FINAL) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"{BASE}/batchInferenceJobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def download(client: TestClient, dataset_id: str) -> dict[str, bytes]:
    urls = client.get(f"{BASE}/datasets/{dataset_id}:getDownloadEndpoint").json()
    return {
        key: client.get(url, headers={"authorization": ""}).content
        for key, url in urls["filenameToSignedUrls"].items()
    }


def jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line]


def assert_status(response: Any, http: int, code: int) -> None:
    assert response.status_code == http, response.text
    body = response.json()
    assert body["code"] == code and body["details"] == [] and body["message"]


# -- datasets -------------------------------------------------------------------------------


def test_dataset_create_get_list_delete(api: Api) -> None:
    client = api.client
    created = make_dataset(client, "ds-one")
    assert created["name"] == f"accounts/{ACCOUNT}/datasets/ds-one"
    assert created["state"] == "UPLOADING"
    assert created["exampleCount"] == "3"
    assert created["status"] == {"code": "OK", "message": ""}
    assert created["createTime"].endswith("Z")
    # snake_case works as well as camelCase
    snake = client.post(
        f"{BASE}/datasets",
        json={
            "dataset_id": "ds-two",
            "dataset": {"display_name": "Two", "example_count": 5, "user_uploaded": {}},
        },
    )
    assert snake.status_code == 200 and snake.json()["displayName"] == "Two"
    assert client.get(f"{BASE}/datasets/ds-two").json()["exampleCount"] == "5"
    make_dataset(client, "ds-three", rows("hi"))

    page1 = client.get(f"{BASE}/datasets", params={"pageSize": 2}).json()
    assert [d["name"].rsplit("/", 1)[1] for d in page1["datasets"]] == ["ds-three", "ds-two"]
    assert page1["totalSize"] == 3 and page1["nextPageToken"]
    page2 = client.get(
        f"{BASE}/datasets", params={"pageSize": 2, "pageToken": page1["nextPageToken"]}
    ).json()
    assert [d["name"].rsplit("/", 1)[1] for d in page2["datasets"]] == ["ds-one"]
    assert page2["nextPageToken"] == ""
    ready = client.get(f"{BASE}/datasets", params={"filter": 'state="READY"'}).json()
    assert [d["name"].rsplit("/", 1)[1] for d in ready["datasets"]] == ["ds-three"]
    assert_status(client.get(f"{BASE}/datasets", params={"filter": "size > 3"}), 400, 3)

    assert client.delete(f"{BASE}/datasets/ds-one").json() == {}
    assert_status(client.get(f"{BASE}/datasets/ds-one"), 404, 5)
    assert_status(client.delete(f"{BASE}/datasets/ds-one"), 404, 5)


def test_dataset_create_errors(api: Api) -> None:
    client = api.client
    no_count = client.post(
        f"{BASE}/datasets", json={"datasetId": "ds", "dataset": {"userUploaded": {}}}
    )
    assert_status(no_count, 400, 3)
    assert no_count.json()["message"] == "example_count is required for uploaded datasets"
    assert no_count.headers["x-should-retry"] == "false"
    bad_id = client.post(
        f"{BASE}/datasets", json={"datasetId": "Bad_ID", "dataset": {"exampleCount": "1"}}
    )
    assert_status(bad_id, 400, 3)
    assert_status(client.post(f"{BASE}/datasets", json={"dataset": {}}), 400, 3)
    make_dataset(client, "ds")
    taken = client.post(
        f"{BASE}/datasets", json={"datasetId": "ds", "dataset": {"exampleCount": 1}}
    )
    assert_status(taken, 409, 6)
    assert taken.json()["message"] == "dataset ds already exists"
    assert_status(client.get(f"{BASE}/datasets/ds", headers={"authorization": "Bearer x"}), 401, 16)


def test_upload_makes_the_dataset_ready(api: Api) -> None:
    client = api.client
    make_dataset(client, "ds")
    data = rows("one", "two")
    response = client.post(
        f"{BASE}/datasets/ds:upload", files={"file": ("dir/my input.jsonl", data)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "ds" and body["object"] == "file" and body["purpose"] == "dataset"
    assert body["bytes"] == len(data) and body["filename"] == "my_input.jsonl"
    assert isinstance(body["created_at"], int)
    assert client.get(f"{BASE}/datasets/ds").json()["state"] == "READY"
    assert download(client, "ds") == {"dataset/ds/my_input.jsonl": data}
    no_file = client.post(f"{BASE}/datasets/ds:upload", files={"other": ("x", b"x")})
    assert_status(no_file, 400, 3)
    assert_status(client.post(f"{BASE}/datasets/nope:upload", files={"file": ("x", b"")}), 404, 5)


def test_signed_upload_then_validate(api: Api) -> None:
    client = api.client
    make_dataset(client, "ds")
    data = rows("a", "b", "c")
    endpoint = client.post(
        f"{BASE}/datasets/ds:getUploadEndpoint",
        json={"filenameToSize": {"input.jsonl": str(len(data))}},
    )
    assert endpoint.status_code == 200, endpoint.text
    url = endpoint.json()["filenameToSignedUrls"]["input.jsonl"]
    assert url.startswith("http://testserver/v1/uploads/")
    # declared but not uploaded yet
    assert_status(client.post(f"{BASE}/datasets/ds:validateUpload", json={}), 400, 3)
    # the size is part of the grant
    assert_status(client.put(url, content=data[:-1]), 400, 3)
    bare = {"authorization": "", "content-type": "application/octet-stream"}
    put = client.put(url, content=data, headers=bare)
    assert put.status_code == 200, put.text
    # a wrong-sized upload again leaves the good file in place
    assert_status(client.put(url, content=data + b"more"), 400, 3)
    assert client.post(f"{BASE}/datasets/ds:validateUpload", json={}).json() == {}
    assert client.get(f"{BASE}/datasets/ds").json()["state"] == "READY"
    assert download(client, "ds") == {"dataset/ds/input.jsonl": data}
    assert_status(client.get(url.replace("/uploads/", "/downloads/")), 403, 7)
    # snake_case body, and a bad file name
    bad = client.post(
        f"{BASE}/datasets/ds:getUploadEndpoint", json={"filename_to_size": {"../x": "3"}}
    )
    assert_status(bad, 400, 3)


def test_download_endpoint_is_a_bodyless_get(api: Api) -> None:
    client = api.client
    make_dataset(client, "ds", rows("x"))
    with_body = client.request("GET", f"{BASE}/datasets/ds:getDownloadEndpoint", content=b"{}")
    assert_status(with_body, 400, 3)
    assert_status(client.post(f"{BASE}/datasets/ds:getDownloadEndpoint", json={}), 405, 12)
    assert_status(client.get(f"{BASE}/datasets/ds:upload"), 405, 12)
    assert_status(client.get(f"{BASE}/datasets/nope:getDownloadEndpoint"), 404, 5)


def test_download_urls_refuse_tampered_expired_and_other_tenant(api: Api) -> None:
    client = api.client
    data = rows("secret")
    make_dataset(client, "ds", data)
    urls = client.get(f"{BASE}/datasets/ds:getDownloadEndpoint").json()["filenameToSignedUrls"]
    url = urls["dataset/ds/input.jsonl"]
    assert client.get(url, headers={"authorization": ""}).content == data
    # the owner's own key may come along; another tenant's may not
    assert client.get(url).content == data
    assert_status(client.get(url, headers=api.b), 403, 7)
    token = url.rsplit("/", 1)[1]
    payload, mac = token.split(".")
    assert_status(client.get(url.replace(mac, mac[:-2] + "AA")), 403, 7)
    assert_status(client.get(url.replace(payload, payload[:-2])), 403, 7)
    # tenant b's dataset of the same id, with tenant a's token pointed at it
    grant = signing.verify(token, SECRET.encode(), method="GET", now=time.time())
    forged = signing.Grant("tb", grant.dataset, grant.name, "GET", grant.expires)
    forged_payload = signing.sign(forged, SECRET.encode()).split(".")[0]
    assert_status(client.get(url.replace(payload, forged_payload)), 403, 7)
    # a well-signed token that has expired
    old = signing.Grant("ta", "ds", "input.jsonl", "GET", int(time.time()) - 1)
    assert_status(client.get(f"/v1/downloads/{signing.sign(old, SECRET.encode())}"), 403, 7)
    # a valid token for a file that is gone
    client.delete(f"{BASE}/datasets/ds")
    assert_status(client.get(url, headers={"authorization": ""}), 404, 5)


def test_signed_urls_expire_after_the_configured_time(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, signing_key=SECRET, signed_url_seconds=1)
    store = MemoryStore()
    registry = ModelRegistry({"fake": ModelSpec(name="fake", engine="fake")})
    with TestClient(create_app(settings, store=store, registry=registry, blobs=MemoryBlobs())) as c:
        _, key = asyncio.run(KeyService(store).create(name="k", tenant="t"))
        c.headers["authorization"] = f"Bearer {key}"
        make_dataset(c, "ds", rows("x"))
        url = c.get(f"{BASE}/datasets/ds:getDownloadEndpoint").json()["filenameToSignedUrls"]
        (url,) = url.values()
        time.sleep(1.1)
        assert_status(c.get(url), 403, 7)


# -- jobs -------------------------------------------------------------------------------------


def test_job_completes_with_results_and_errors(api: Api) -> None:
    client = api.client
    make_dataset(client, "input", rows("hello world", FAIL_TRIGGER, "third one"))
    created = create_job(
        client,
        "job-one",
        model="accounts/fireworks/models/fake",
        inputDatasetId=f"accounts/{ACCOUNT}/datasets/input",
        displayName="First",
        inferenceParameters={"maxTokens": 2, "extraBody": '{"stop": ["zzz"]}'},
    )
    assert created["name"] == f"accounts/{ACCOUNT}/batchInferenceJobs/job-one"
    assert created["state"] in {"JOB_STATE_VALIDATING", "JOB_STATE_PENDING"}
    assert created["jobProgress"] is None
    assert created["model"] == "accounts/fireworks/models/fake"
    assert created["inputDatasetId"] == f"accounts/{ACCOUNT}/datasets/input"
    output = created["outputDatasetId"].rsplit("/", 1)[1]
    assert output.startswith("bij-") and len(output) == 12
    assert created["inferenceParameters"] == {"maxTokens": 2, "extraBody": '{"stop": ["zzz"]}'}
    assert created["createdBy"] == "alice" and created["displayName"] == "First"
    assert created["expireTime"] > created["createTime"]

    job = wait_job(client, "job-one")
    assert job["state"] == "JOB_STATE_COMPLETED" and job["status"]["code"] == "OK"
    progress = job["jobProgress"]
    assert progress["percent"] == 100 and progress["epoch"] == 0
    assert progress["totalInputRequests"] == 3
    assert progress["totalProcessedRequests"] == 3
    assert progress["successfullyProcessedRequests"] == 2
    assert progress["failedRequests"] == 1 and progress["outputRows"] == 2
    assert progress["inputTokens"] > 0 and progress["outputTokens"] == 4
    assert all(isinstance(v, int) for v in progress.values())
    lifecycle = job["lifecycle"]
    assert lifecycle["validatedTime"] and lifecycle["runStartTime"] and lifecycle["endTime"]

    dataset = client.get(f"{BASE}/datasets/{output}").json()
    assert dataset["state"] == "READY"
    assert dataset["sourceJobName"] == f"accounts/{ACCOUNT}/batchInferenceJobs/job-one"
    files = download(client, output)
    assert set(files) == {f"dataset/{output}/{RESULTS}", f"dataset/{output}/{ERRORS}"}
    results = jsonl(files[f"dataset/{output}/{RESULTS}"])
    assert [r["custom_id"] for r in results] == ["req-1", "req-3"]
    assert results[0]["response"]["object"] == "chat.completion"
    assert results[0]["response"]["choices"][0]["message"]["content"] == "echo: hello"
    (error,) = jsonl(files[f"dataset/{output}/{ERRORS}"])
    assert error["custom_id"] == "req-2" and error["error"]["message"]


def test_snake_case_job_body_and_query(api: Api) -> None:
    client = api.client
    make_dataset(client, "input", rows("a b c d"))
    response = client.post(
        f"{BASE}/batchInferenceJobs",
        params={"batch_inference_job_id": "snake"},
        json={
            "model": "fake",
            "input_dataset_id": "input",
            "output_dataset_id": "snake-out",
            "display_name": "snake",
            "inference_parameters": {"max_tokens": 1, "top_p": 0.5, "top_k": 3, "n": 1},
        },
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["name"].endswith("/snake") and job["displayName"] == "snake"
    assert job["outputDatasetId"] == f"accounts/{ACCOUNT}/datasets/snake-out"
    assert job["inferenceParameters"] == {
        "maxTokens": 1,
        "topP": 0.5,
        "topK": 3,
        "n": 1,
        "extraBody": "{}",
    }
    assert wait_job(client, "snake")["state"] == "JOB_STATE_COMPLETED"
    (line,) = jsonl(download(client, "snake-out")[f"dataset/snake-out/{RESULTS}"])
    assert line["response"]["choices"][0]["message"]["content"] == "echo:"


def test_validation_failure_fails_the_job_with_file_and_line(api: Api) -> None:
    client = api.client
    bad = rows("ok") + b'{"custom_id": "req-2", "body": {"messages": [{"role": "robot"}]}}\n'
    make_dataset(client, "input", bad)
    job = create_job(client, "bad", model="fake", inputDatasetId="input", outputDatasetId="out")
    job = wait_job(client, "bad")
    assert job["state"] == "JOB_STATE_FAILED"
    assert job["status"]["code"] == "INVALID_ARGUMENT"
    assert job["status"]["message"].startswith("input.jsonl:2: ")
    assert "role" in job["status"]["message"]
    assert job["jobProgress"] is None
    # the output dataset is never created
    assert_status(client.get(f"{BASE}/datasets/out"), 404, 5)


@pytest.mark.parametrize(
    ("body", "http", "code", "needle"),
    [
        ({"model": "nope", "inputDatasetId": "input"}, 400, 3, "model"),
        ({"model": "accounts/x/weird/fake", "inputDatasetId": "input"}, 400, 3, "model"),
        ({"inputDatasetId": "input"}, 400, 3, "model"),
        ({"model": "fake"}, 400, 3, "inputDatasetId"),
        ({"model": "fake", "inputDatasetId": "missing"}, 404, 5, "missing"),
        ({"model": "fake", "inputDatasetId": "empty"}, 400, 3, "empty"),
        ({"model": "fake", "inputDatasetId": "input", "outputDatasetId": "input"}, 409, 6, ""),
        ({"model": "fake", "inputDatasetId": "input", "precision": "FP3"}, 400, 3, "precision"),
        (
            {"model": "fake", "inputDatasetId": "input", "inferenceParameters": {"n": 2}},
            400,
            3,
            "n=1",
        ),
        (
            {"model": "fake", "inputDatasetId": "input", "inferenceParameters": {"extraBody": "["}},
            400,
            3,
            "extraBody",
        ),
        (
            {
                "model": "fake",
                "inputDatasetId": "input",
                "inferenceParameters": {"extraBody": '{"temperature": 9}'},
            },
            400,
            3,
            "temperature",
        ),
        (
            {"model": "fake", "inputDatasetId": "input", "continuedFromJobName": "nope"},
            404,
            5,
            "nope",
        ),
    ],
)
def test_job_create_errors(
    api: Api, body: dict[str, Any], http: int, code: int, needle: str
) -> None:
    make_dataset(api.client, "input", rows("x"))
    make_dataset(api.client, "empty")
    response = api.client.post(f"{BASE}/batchInferenceJobs", json=body)
    assert_status(response, http, code)
    assert needle in response.json()["message"]


def test_duplicate_job_id_is_409(api: Api) -> None:
    make_dataset(api.client, "input", rows("x"))
    create_job(api.client, "dup", model="fake", inputDatasetId="input")
    again = api.client.post(
        f"{BASE}/batchInferenceJobs",
        params={"batchInferenceJobId": "dup"},
        json={"model": "fake", "inputDatasetId": "input"},
    )
    assert_status(again, 409, 6)


def test_list_with_filter_and_pages(api: Api) -> None:
    client = api.client
    make_dataset(client, "input", rows("x"))
    for n in range(3):
        create_job(client, f"job-{n}", model="fake", inputDatasetId="input")
    for n in range(3):
        wait_job(client, f"job-{n}")
    seen: list[str] = []
    token = ""
    while True:
        page = client.get(
            f"{BASE}/batchInferenceJobs", params={"pageSize": 2, "pageToken": token}
        ).json()
        seen += [job["name"].rsplit("/", 1)[1] for job in page["batchInferenceJobs"]]
        assert page["totalSize"] == 3
        token = page["nextPageToken"]
        if not token:
            break
    assert seen == ["job-2", "job-1", "job-0"]
    for text in ("state=JOB_STATE_COMPLETED", 'state="JOB_STATE_COMPLETED"'):
        done = client.get(f"{BASE}/batchInferenceJobs", params={"filter": text}).json()
        assert len(done["batchInferenceJobs"]) == 3
    running = client.get(
        f"{BASE}/batchInferenceJobs", params={"filter": "state=JOB_STATE_RUNNING"}
    ).json()
    assert running == {"batchInferenceJobs": [], "nextPageToken": "", "totalSize": 0}
    bad = client.get(f"{BASE}/batchInferenceJobs", params={"filter": "state=COMPLETED"})
    assert_status(bad, 400, 3)
    assert_status(client.get(f"{BASE}/batchInferenceJobs", params={"pageToken": "%%"}), 400, 3)


def test_delete_stops_a_running_job_and_removes_it(api: Api) -> None:
    client = api.client
    make_dataset(client, "input", rows("a b c d e f g h i j k l m n o p q r s t"))
    create_job(client, "long", model="slow", inputDatasetId="input", outputDatasetId="out")
    running = wait_job(client, "long", {"JOB_STATE_RUNNING", *FINAL})
    assert running["state"] == "JOB_STATE_RUNNING"
    assert running["jobProgress"]["totalInputRequests"] == 1
    # its output dataset is taken before the job writes it
    same_output = {"model": "fake", "inputDatasetId": "input", "outputDatasetId": "out"}
    assert_status(client.post(f"{BASE}/batchInferenceJobs", json=same_output), 409, 6)
    taken = {"datasetId": "out", "dataset": {"exampleCount": "1"}}
    assert_status(client.post(f"{BASE}/datasets", json=taken), 409, 6)
    assert client.delete(f"{BASE}/batchInferenceJobs/long").json() == {}
    assert_status(client.get(f"{BASE}/batchInferenceJobs/long"), 404, 5)
    assert_status(client.delete(f"{BASE}/batchInferenceJobs/long"), 404, 5)
    # the engine slot was freed: a new job on the same one-slot model runs to the end
    make_dataset(client, "short", rows("x"))
    create_job(client, "after", model="slow", inputDatasetId="short")
    assert wait_job(client, "after")["state"] == "JOB_STATE_COMPLETED"


def test_continued_job_reruns_only_failed_rows(api: Api) -> None:
    client = api.client
    make_dataset(client, "input", rows("one", FAIL_TRIGGER, "three", FAIL_TRIGGER))
    create_job(
        client,
        "first",
        model="fake",
        inputDatasetId="input",
        inferenceParameters={"maxTokens": 3},
    )
    assert wait_job(client, "first")["jobProgress"]["failedRequests"] == 2
    continued = create_job(
        client, "second", continuedFromJobName=f"accounts/{ACCOUNT}/batchInferenceJobs/first"
    )
    assert continued["continuedFromJobName"] == f"accounts/{ACCOUNT}/batchInferenceJobs/first"
    assert continued["model"] == "accounts/fireworks/models/fake"
    assert continued["inputDatasetId"] == f"accounts/{ACCOUNT}/datasets/input"
    assert continued["inferenceParameters"] == {"maxTokens": 3, "extraBody": "{}"}
    job = wait_job(client, "second")
    assert job["jobProgress"]["totalInputRequests"] == 2
    output = job["outputDatasetId"].rsplit("/", 1)[1]
    first_output = client.get(f"{BASE}/batchInferenceJobs/first").json()["outputDatasetId"]
    assert job["outputDatasetId"] != first_output
    files = download(client, output)
    assert jsonl(files[f"dataset/{output}/{RESULTS}"]) == []
    assert [e["custom_id"] for e in jsonl(files[f"dataset/{output}/{ERRORS}"])] == [
        "req-2",
        "req-4",
    ]
    other_model = client.post(
        f"{BASE}/batchInferenceJobs", json={"continuedFromJobName": "first", "model": "slow"}
    )
    assert_status(other_model, 400, 3)


def test_tenants_are_isolated_whatever_the_account(api: Api) -> None:
    client = api.client
    make_dataset(client, "input", rows("x"))
    create_job(client, "mine", model="fake", inputDatasetId="input")
    for account in (ACCOUNT, "other"):
        b = f"/v1/accounts/{account}"
        assert_status(client.get(f"{b}/datasets/input", headers=api.b), 404, 5)
        assert_status(client.get(f"{b}/batchInferenceJobs/mine", headers=api.b), 404, 5)
        assert_status(client.delete(f"{b}/batchInferenceJobs/mine", headers=api.b), 404, 5)
        assert_status(client.delete(f"{b}/datasets/input", headers=api.b), 404, 5)
        listed = client.get(f"{b}/batchInferenceJobs", headers=api.b).json()
        assert listed["batchInferenceJobs"] == []
        assert client.get(f"{b}/datasets", headers=api.b).json()["datasets"] == []
    borrowed = client.post(
        f"{BASE}/batchInferenceJobs",
        json={"model": "fake", "inputDatasetId": "input"},
        headers=api.b,
    )
    assert_status(borrowed, 404, 5)
    # the same ids are free for tenant b; names echo the account in the path
    assert client.get("/v1/accounts/other/datasets/input").json()["name"] == (
        "accounts/other/datasets/input"
    )
    assert wait_job(client, "mine")["state"] == "JOB_STATE_COMPLETED"


# -- the official SDK, over the test client -------------------------------------------------


class Bridge(httpx.BaseTransport):
    """Hands the SDK's httpx requests to the test client (which is built on httpx2)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.client.request(
            request.method,
            str(request.url),
            headers=list(request.headers.multi_items()),
            content=request.read(),
        )
        return httpx.Response(
            answer.status_code, headers=list(answer.headers.multi_items()), content=answer.content
        )


def test_official_sdk_round_trip(api: Api) -> None:
    key = api.a["authorization"].removeprefix("Bearer ")
    fw = fireworks.Fireworks(
        api_key=key,
        account_id=ACCOUNT,
        base_url="http://testserver",
        http_client=httpx.Client(transport=Bridge(api.client)),
    )
    dataset = fw.datasets.create(
        dataset_id="sdk-input", dataset={"example_count": "2", "user_uploaded": {}}
    )
    assert dataset.state == "UPLOADING" and dataset.example_count == "2"
    uploaded = fw.datasets.upload("sdk-input", file=("input.jsonl", rows("hi", "there")))
    assert uploaded.bytes == len(rows("hi", "there"))
    assert fw.datasets.get("sdk-input").state == "READY"
    assert [d.name for d in fw.datasets.list()] == [f"accounts/{ACCOUNT}/datasets/sdk-input"]
    renamed = fw.datasets.update("sdk-input", display_name="Renamed", example_count="2")
    assert renamed.display_name == "Renamed" and renamed.update_time
    urls = fw.datasets.get_download_endpoint("sdk-input").filename_to_signed_urls
    assert urls is not None and list(urls) == ["dataset/sdk-input/input.jsonl"]

    fw.datasets.create(dataset_id="sdk-signed", dataset={"example_count": "1"})
    data = rows("signed")
    upload = fw.datasets.get_upload_endpoint("sdk-signed", filename_to_size={"a.jsonl": "7"})
    assert upload.filename_to_signed_urls is not None
    with pytest.raises(fireworks.BadRequestError):
        fw.datasets.validate_upload("sdk-signed", body={})
    upload = fw.datasets.get_upload_endpoint(
        "sdk-signed", filename_to_size={"a.jsonl": str(len(data))}
    )
    assert upload.filename_to_signed_urls is not None
    put = api.client.put(upload.filename_to_signed_urls["a.jsonl"], content=data)
    assert put.status_code == 200, put.text
    assert fw.datasets.validate_upload("sdk-signed", body={}) == {}
    assert fw.datasets.get("sdk-signed").state == "READY"

    job = fw.batch_inference_jobs.create(
        batch_inference_job_id="sdk-job",
        model="accounts/fireworks/models/fake",
        input_dataset_id="sdk-input",
        inference_parameters={"max_tokens": 4},
    )
    assert job.name == f"accounts/{ACCOUNT}/batchInferenceJobs/sdk-job"
    wait_job(api.client, "sdk-job")
    done = fw.batch_inference_jobs.get("sdk-job")
    assert done.state == "JOB_STATE_COMPLETED" and done.status and done.status.code == "OK"
    assert done.job_progress and done.job_progress.successfully_processed_requests == 2
    assert done.inference_parameters and done.inference_parameters.max_tokens == 4
    assert [j.name for j in fw.batch_inference_jobs.list(page_size=1)] == [job.name]
    assert fw.batch_inference_jobs.delete("sdk-job") == {}

    with pytest.raises(fireworks.NotFoundError) as missing:
        fw.batch_inference_jobs.get("sdk-job")
    assert missing.value.body == {
        "code": 5,
        "message": "batch inference job sdk-job not found",
        "details": [],
    }
    with pytest.raises(fireworks.BadRequestError):
        fw.datasets.create(dataset_id="no-count", dataset={"user_uploaded": {}})
    with pytest.raises(fireworks.ConflictError):
        fw.datasets.create(dataset_id="sdk-input", dataset={"example_count": "1"})
    with pytest.raises(fireworks.AuthenticationError):
        fw.with_options(api_key="wrong").datasets.get("sdk-input")
