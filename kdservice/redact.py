"""Server paths never reach a client: the one function that takes them out of messages.

Job errors and logs (kdcore's DataError names files), upload problems (PIL names the file it could not
read) and every API problem detail pass through `redact_paths`. The service's own folders become a
neutral label (`<KD_DATA_DIR>/CIFAR-10-C/fog.npy`); any other absolute path becomes its base name
(`/home/op/secret/x.npy` -> `x.npy`). The API's own routes (`/v1/...`) are public and kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

from kdservice.settings import Settings

# An absolute path: "/" not preceded by a word character, ".", "/", ":" (URLs) or ">" (a label already put in),
# up to whitespace, a quote or punctuation that does not occur in the service's own file names.
_ABSOLUTE = re.compile(r"(?<![\w.:/>~-])/[^\s'\"`<>|,;()\[\]{}]+")
_PUBLIC = re.compile(r"/v1(?:/|$)|/healthz$|/readyz$|/metrics$|/docs$|/openapi\.json$")


def _base_name(match: re.Match[str]) -> str:
    path = match.group(0)
    if _PUBLIC.match(path):
        return path
    return path.rstrip("/.").rsplit("/", 1)[-1] or "<path>"


def redact_paths(text: str | None, labels: Mapping[str | Path, str] | None = None) -> str | None:
    """text with each labelled folder replaced by its label (longest first) and other absolute paths by
    their base name. None stays None."""
    if not text:
        return text
    folders = {str(k).rstrip("/"): v for k, v in (labels or {}).items() if str(k).rstrip("/")}
    for folder in sorted(folders, key=len, reverse=True):
        # Only the whole folder: /srv/var must not turn /srv/var2/x into <label>2/x.
        pattern = re.escape(folder) + r"(?=/|[\s'\"`<>|,;()\[\]{}]|$)"
        text = re.sub(pattern, lambda _m, label=folders[folder]: label, text)
    return _ABSOLUTE.sub(_base_name, text)


def service_labels(settings: Settings) -> dict[str, str]:
    """The service's folders and the labels they are shown as."""
    return {str(settings.data_dir): "<KD_DATA_DIR>", str(settings.artifact_dir): "<KD_ARTIFACT_DIR>"}


def service_redactor(settings: Settings) -> Callable[[str | None], str | None]:
    labels = service_labels(settings)
    return lambda text: redact_paths(text, labels)
