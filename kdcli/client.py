"""`kd submit|status|list|cancel|download|results|upload-dataset|upload-model`: the service's HTTP client.

KD_API_URL (default http://127.0.0.1:8000) and KD_API_KEY (printed by `make up`) say where and who.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from kdcore.job_files import REPORT
from kdservice.states import TERMINAL_STATES

DEFAULT_API_URL = "http://127.0.0.1:8000"


class ClientError(Exception):
    """An API answer the user should read (problem+json detail, or a connection failure)."""


def _client(timeout: float | None = 30.0) -> httpx.Client:
    headers = {"Accept": "application/json"}
    key = os.environ.get("KD_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    base = os.environ.get("KD_API_URL", DEFAULT_API_URL).rstrip("/")
    return httpx.Client(base_url=base, headers=headers, timeout=timeout)


def _check(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    try:
        body = response.json()
        detail = body.get("detail") or body.get("title") or body
    except ValueError:
        detail = response.text.strip() or response.reason_phrase
    raise ClientError(f"HTTP {response.status_code}: {detail}")


def _request(method: str, path: str, timeout: float | httpx.Timeout = 30.0, **kwargs: Any) -> Any:
    with _client(timeout) as client:
        try:
            response = _check(client.request(method, path, **kwargs))
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach {client.base_url}: {exc}") from exc
    return response.json() if response.content else None


def iter_sse(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs of a text/event-stream; data is decoded JSON when it is JSON."""
    event, data = "message", []
    for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    yield event, json.loads(text)
                except ValueError:
                    yield event, text
            event, data = "message", []
        elif line.startswith(":"):
            continue  # comment / keep-alive
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


def _fraction_of(payload: Any) -> float | None:
    if not isinstance(payload, dict):
        return None
    progress = payload.get("progress") if isinstance(payload.get("progress"), dict) else payload
    value = progress.get("fraction")
    return float(value) if isinstance(value, int | float) else None


def _status_text(payload: dict) -> str:
    """"running distilling, seed 1, epoch 3 of 15" from a state or progress event (as the pages show it)."""
    words = " ".join(str(s) for s in (payload.get("state"), payload.get("phase")) if s)
    progress = payload.get("progress")
    if isinstance(progress, dict) and progress.get("epochs"):
        seed = f"seed {progress['seed']}, " if progress.get("seed") is not None else ""
        words += f", {seed}epoch {progress.get('epoch')} of {progress['epochs']}"
    return words


def wait_for_job(job_id: str, *, show_progress: bool = True) -> dict:
    """Follow /events until the job is terminal (drawing a progress bar), then return the job."""
    from tqdm import tqdm

    # The status goes in desc, placed after the bar: tqdm would put ", " before a postfix.
    bar = tqdm(total=100, unit="%", desc=job_id[:8], disable=not show_progress,
               bar_format="{percentage:3.0f}%|{bar}| {desc}")
    try:
        with _client(timeout=httpx.Timeout(30.0, read=None)) as client:
            with client.stream("GET", f"/v1/jobs/{job_id}/events",
                               headers={"Accept": "text/event-stream"}) as response:
                if not response.is_success:
                    response.read()  # a streamed error body must be read before .json()
                    _check(response)
                for event, payload in iter_sse(response.iter_lines()):
                    fraction = _fraction_of(payload)
                    if fraction is not None:
                        bar.update(max(0.0, round(100 * fraction, 1) - bar.n))
                    if isinstance(payload, dict):
                        if status := _status_text(payload):
                            bar.set_description_str(f"{job_id[:8]} {status}")
                        if event == "log" and payload.get("message"):
                            bar.write(str(payload["message"]))
                # the server ends the stream after a terminal state (and its last log lines)
    except httpx.TransportError as exc:
        raise ClientError(f"lost the event stream: {exc}") from exc
    finally:
        bar.close()
    return _request("GET", f"/v1/jobs/{job_id}")


def cmd_submit(args: argparse.Namespace) -> int:
    spec = json.loads(Path(args.spec).read_text())
    if args.dataset_id:  # run the spec on an uploaded data set, keeping its dataset options (subset, ...)
        dataset = {k: v for k, v in spec.get("dataset", {}).items() if k not in ("root", "download")}
        spec["dataset"] = {**dataset, "source": "upload", "dataset_id": args.dataset_id}
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    job = _request("POST", "/v1/jobs", json=spec, headers=headers)
    print(job["id"])
    if not args.wait:
        return 0
    job = wait_for_job(job["id"], show_progress=not args.quiet)
    _print_state(job)
    return 0 if job["state"] == "succeeded" else 1


def _print_state(job: dict) -> None:
    line = f"{job['id']}  {job['state']}"
    if job.get("phase") and job["state"] not in TERMINAL_STATES:
        line += f"  {job['phase']}"
    error = job.get("error") if isinstance(job.get("error"), dict) else None
    code = (error or {}).get("code") or job.get("error_code")
    message = (error or {}).get("message") or job.get("error_message")
    if code:
        line += f"  {code}: {message}"
    print(line)


def cmd_status(args: argparse.Namespace) -> int:
    job = _request("GET", f"/v1/jobs/{args.job_id}")
    if args.json:
        print(json.dumps(job, indent=2))
    else:
        _print_state(job)
        progress = job.get("progress") or {}
        if progress and job["state"] not in TERMINAL_STATES:
            seed = f"seed {progress['seed']}  " if progress.get("seed") is not None else ""
            eta = progress.get("eta_seconds")
            print(f"  {seed}epoch {progress.get('epoch')}/{progress.get('epochs')}  "
                  f"{100 * (progress.get('fraction') or 0):.0f}%  eta {'-' if eta is None else f'{eta:.0f}'} s")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    page = _request("GET", "/v1/jobs", params=params)
    jobs = page.get("items", page.get("jobs", [])) if isinstance(page, dict) else page
    print(f"{'id':32}  {'state':10}  {'created':25}  name")
    for job in jobs:
        created = str(job.get("created_at", ""))
        print(f"{job['id']:32}  {job['state']:10}  {created:25}  {job.get('name', '')}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    job = _request("POST", f"/v1/jobs/{args.job_id}/cancel")
    _print_state(job or _request("GET", f"/v1/jobs/{args.job_id}"))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    listing = _request("GET", f"/v1/jobs/{args.job_id}/artifacts")
    items = listing.get("items", listing.get("artifacts", [])) if isinstance(listing, dict) else listing
    expected = next((a.get("sha256") for a in items if a.get("name") == args.artifact), None)
    target = Path(args.output or args.artifact)
    digest = hashlib.sha256()
    partial = target.with_name(target.name + ".part")
    with _client(timeout=httpx.Timeout(30.0, read=300.0)) as client:
        with client.stream("GET", f"/v1/jobs/{args.job_id}/artifacts/{args.artifact}") as response:
            if not response.is_success:
                response.read()
                _check(response)
            with partial.open("wb") as out:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    out.write(chunk)
    if expected and digest.hexdigest() != expected:
        partial.unlink()
        raise ClientError(f"{args.artifact}: sha256 mismatch (got {digest.hexdigest()}, expected {expected})")
    partial.replace(target)
    print(f"{target}  {target.stat().st_size} bytes  sha256 {digest.hexdigest()}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """report.html of a job: a self-contained page that opens from disk (no server, no network)."""
    args.artifact = REPORT
    args.output = args.output or f"report-{args.job_id}.html"
    return cmd_download(args)


UPLOAD_TIMEOUT = httpx.Timeout(30.0, read=600.0, write=600.0)  # the server unpacks and checks the archive


def _upload(path: str, route: str, form: dict[str, Any]) -> dict:
    file = Path(path)
    if not file.is_file():
        raise ClientError(f"{path}: no such file")
    with file.open("rb") as handle:
        data = {k: str(v) for k, v in form.items() if v is not None}
        return _request("POST", route, timeout=UPLOAD_TIMEOUT, files={"file": (file.name, handle)}, data=data)


def weights_card(path: str) -> dict[str, str]:
    """The metadata kdcore writes into its safetensors files (arch, num_classes, ...), or {}.
    Read from the header (8-byte length, then JSON), so the client needs neither torch nor the tensors."""
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(length)) if 0 < length < 100_000_000 else {}
    except (OSError, ValueError):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) and meta.get("format") == "kd-service/1" else {}


def cmd_upload_dataset(args: argparse.Namespace) -> int:
    info = _upload(args.archive, "/v1/datasets", {"name": args.name})
    print(f"dataset {info['id']}  {info['num_images']} images, {info['num_classes']} classes")
    print(json.dumps({"dataset": info["spec_hint"]}))
    return 0


def cmd_upload_model(args: argparse.Namespace) -> int:
    card = weights_card(args.weights)
    form = {"arch": args.arch or card.get("arch"), "num_classes": args.num_classes or card.get("num_classes"),
            "in_channels": args.in_channels or card.get("in_channels"), "name": args.name}
    missing = [f"--{k.replace('_', '-')}" for k in ("arch", "num_classes") if form[k] is None]
    if missing:
        raise ClientError(f"{args.weights} carries no kd metadata: give {' and '.join(missing)}")
    info = _upload(args.weights, "/v1/models", form)
    print(f"model {info['id']}  {info['arch']}, {info['num_classes']} classes, sha256 {info['sha256'][:12]}")
    print(json.dumps({"teacher": {"arch": info["arch"], "weights": info["id"]}}))
    return 0


def results_table(summary: dict[str, Any]) -> str:
    """The teacher / baseline / distilled table `kd results` prints (mean ± 95% CI half-width over seeds),
    then the paired KD-minus-baseline differences."""
    from kdservice.summaries import MODEL_LABELS, format_quantity, format_spread

    header = ("model", "clean acc", "corrupted acc", "params", "size", "latency")
    rows = [header]
    for key, label in MODEL_LABELS.items():
        block = summary.get(key)
        if block:
            rows.append((label, format_spread(block.get("clean_acc")), format_spread(block.get("corruption_acc")),
                         format_quantity(block.get("params"), "params"),
                         format_quantity(block.get("size_bytes"), "size"),
                         format_quantity(block.get("latency_ms"), "ms")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    deltas = summary.get("kd_vs_baseline") or {}
    if deltas:
        lines.append("")
        lines.append("distilled - baseline (same seed):  clean "
                     f"{format_spread(deltas.get('clean_acc'), signed=True)},  corrupted "
                     f"{format_spread(deltas.get('corruption_acc'), signed=True)}")
    return "\n".join(lines)


def cmd_results(args: argparse.Namespace) -> int:
    from kdservice.summaries import summarize_results  # pure Python: no database or Celery import

    results = _request("GET", f"/v1/jobs/{args.job_id}/results")
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(results_table(summarize_results(results)))
    return 0


def _run(func):
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ClientError as exc:
            print(f"kd: {exc}", file=sys.stderr)
            return 2
    return wrapped


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("submit", help="submit a job spec (JSON) to the service")
    p.add_argument("spec", help="path of the job spec JSON file")
    p.add_argument("--wait", action="store_true", help="follow progress; exit 0 only if the job succeeds")
    p.add_argument("--quiet", action="store_true", help="with --wait: no progress bar")
    p.add_argument("--idempotency-key", help="a repeat with the same key returns the same job")
    p.add_argument("--dataset-id", help="run on this uploaded data set (`kd upload-dataset` prints it): replaces "
                   "the spec's dataset source, keeps its other dataset options")
    p.set_defaults(func=_run(cmd_submit))

    p = subparsers.add_parser("status", help="state, phase and progress of a job")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="print the whole job as JSON")
    p.set_defaults(func=_run(cmd_status))

    p = subparsers.add_parser("list", help="your jobs, newest first")
    p.add_argument("--status", help="only jobs in this state")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=_run(cmd_list))

    p = subparsers.add_parser("cancel", help="ask a job to stop")
    p.add_argument("job_id")
    p.set_defaults(func=_run(cmd_cancel))

    p = subparsers.add_parser("download", help="download an artifact of a finished job")
    p.add_argument("job_id")
    p.add_argument("--artifact", default="student.safetensors",
                   help="student.safetensors (default), student.onnx, student.ts, teacher.safetensors, "
                   "baseline.safetensors, results.json, report.html")
    p.add_argument("-o", "--output", help="file to write (default: the artifact name)")
    p.set_defaults(func=_run(cmd_download))

    p = subparsers.add_parser("report", help="save a job's report.html (opens from disk, no server needed)")
    p.add_argument("job_id")
    p.add_argument("-o", "--output", help="file to write (default: report-<job id>.html)")
    p.set_defaults(func=_run(cmd_report))

    p = subparsers.add_parser("upload-dataset", help="upload an ImageFolder .zip/.tar.gz; prints its dataset spec")
    p.add_argument("archive")
    p.add_argument("--name", help="default: the file name")
    p.set_defaults(func=_run(cmd_upload_dataset))

    p = subparsers.add_parser("upload-model", help="upload teacher weights (.safetensors); prints its teacher spec")
    p.add_argument("weights", help="a state_dict in safetensors; kd's own files (e.g. a job's "
                   "teacher.safetensors) carry arch and classes, so the options below are optional for them")
    p.add_argument("--arch")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--in-channels", type=int)
    p.add_argument("--name", help="default: the file name")
    p.set_defaults(func=_run(cmd_upload_model))

    p = subparsers.add_parser("results", help="teacher / baseline / distilled: accuracy, robustness, size")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="print the full results JSON")
    p.set_defaults(func=_run(cmd_results))
