"""What the console computes for its pages (progress, ETA, the throughput series and its
charts), and a document workflow job on the console's batches pages."""

from __future__ import annotations

import json
import re
from pathlib import Path

from inferq.api.console.views import batch_progress, chart, nice_ceiling, queue_rows
from inferq.core.models import ActiveCount, Batch, BatchCounts
from inferq.core.states import JobState, ServiceClass
from inferq.core.throughput import FinishedCount, series, window
from tests import documents_samples as samples
from tests.unit.test_workflows import create, download, make_client, wait

T0 = 1_699_999_980.0  # a whole minute


def make_batch(**changes: object) -> Batch:
    batch = Batch(
        id="batch_1",
        tenant="t",
        dialect="openai",
        model=None,
        endpoint="/v1/chat/completions",
        state=JobState.RUNNING,
        input_file_id="file-1",
        created_at=T0,
        expires_at=T0 + 86400,
        total=10,
        started_at=T0 + 10,
    )
    return batch.evolve(**changes)


def test_progress_rate_and_eta_from_the_rows_so_far() -> None:
    counts = BatchCounts(total=10, succeeded=3, failed=1, running=1, completion_tokens=80)
    progress = batch_progress(make_batch(), counts, now=T0 + 30)
    assert (progress.ended, progress.total, progress.percent) == (4, 10, 40)
    assert progress.per_second == 4.0  # 80 output tokens in 20 s
    assert progress.eta == 30.0  # 6 rows left at 4 rows in 20 s
    assert progress.rate_of == "output tokens"
    ended = batch_progress(make_batch(state=JobState.SUCCEEDED, finished_at=T0 + 50), counts, 99e9)
    assert ended.eta is None and ended.elapsed == 40.0
    embed = make_batch(endpoint="/v1/embeddings", state=JobState.QUEUED, started_at=None)
    waiting = batch_progress(embed, BatchCounts(total=10, prompt_tokens=5), now=T0 + 30)
    assert waiting.per_second is None and waiting.eta is None
    assert waiting.rate_of == "input tokens"


def test_the_series_fills_empty_minutes_and_rates_the_current_one_over_its_part() -> None:
    now = T0 + 30  # T0 is a whole minute: the current minute has lasted 30 s
    since, until = window(now, span=300, bucket=60)
    assert (since, until) == (T0 - 240, T0 + 60)
    counts = [
        FinishedCount(bucket=1, jobs=6, succeeded=5, prompt_tokens=60, completion_tokens=120),
        FinishedCount(bucket=4, jobs=3, succeeded=3, prompt_tokens=0, completion_tokens=30),
    ]
    data = series(counts, since=since, until=until, bucket=60, now=now)
    assert [p.jobs for p in data.points] == [0, 6, 0, 0, 3]
    assert data.points[1].tokens_per_second == 2.0 and data.points[1].jobs_per_second == 0.1
    assert data.points[4].tokens_per_second == 1.0  # 30 tokens in the 30 s so far
    assert (data.jobs, data.completion_tokens) == (9, 150)


def test_chart_scale_and_points() -> None:
    assert [nice_ceiling(v) for v in (0, 0.03, 1, 1.2, 3, 7, 99)] == [1, 0.05, 1, 2, 5, 10, 100]
    drawn = chart("c", "title", "x/s", [0.0, 1.5, 3.0], span=180)
    points = [tuple(map(float, p.split(","))) for p in drawn.points.split()]
    assert points[0] == (drawn.left, drawn.bottom) and points[2][0] == drawn.right
    assert points[2][1] > drawn.top  # 3.0 under the scale's top, 5
    assert [t.label for t in drawn.y_ticks] == ["0", "2.5", "5"]
    assert drawn.x_ticks[0].label == "-3 min" and drawn.x_ticks[-1].label == "now"


def test_queue_rows_cover_every_model_and_class() -> None:
    counts = [
        ActiveCount(
            model="m", service_class=ServiceClass.BATCH, state=JobState.QUEUED, in_batch=True,
            count=4,
        ),
        ActiveCount(
            model="m", service_class=ServiceClass.BATCH, state=JobState.VALIDATING,
            in_batch=True, count=2,
        ),
        ActiveCount(
            model="other", service_class=ServiceClass.ASYNC, state=JobState.RUNNING,
            in_batch=False, count=1,
        ),
    ]  # fmt: skip
    rows = {(r.model, r.service_class): r for r in queue_rows(counts, ["m", "idle"])}
    assert len(rows) == 9
    assert (rows["m", "batch"].waiting, rows["m", "batch"].validating) == (4, 2)
    assert rows["m", "batch"].batch_rows == 4
    assert rows["other", "async"].running == 1 and rows["idle", "interactive"].waiting == 0


def test_a_workflow_job_shows_its_tasks_and_downloads_each_documents_output(
    tmp_path: Path,
) -> None:
    with make_client(tmp_path) as client:
        files = [samples.text_file(), samples.markdown_file()]
        job = create(client, {"template_id": "fast_chunk_embed"}, files)
        wait(client, job["id"], {"COMPLETED"})
        expected = download(client, job["id"], job["input_file_ids"][0])
        key = client.headers.pop("unstructured-api-key")
        client.post("/console/login", data={"key": key})

        listing = client.get("/console/batches").text
        assert job["id"] in listing and "workflow job" in listing
        page = client.get(f"/console/batches/{job['id']}")
        assert page.status_code == 200 and "Workflow job" in page.text
        assert "6 done, 0 failed of 6 tasks" in page.text  # 2 files, 3 nodes
        links = re.findall(r'href="(/console/batches/[^"]+/documents/[^"]+)" download', page.text)
        assert len(links) == 2
        got = client.get(links[0])
        assert got.status_code == 200 and json.loads(got.content) == expected
        assert client.get(f"/console/batches/{job['id']}/documents/nope").status_code == 404
