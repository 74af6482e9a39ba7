"""kombu's filesystem transport for the worker, which recreates the broker's folders if they vanish.

Stock kombu ends the worker ("Unrecoverable error: FileNotFoundError") when `broker/queue/` is deleted
under it. Here the consumer recreates the folders and reports a lost connection instead, so Celery
reconnects and declares the queue and its binding again (the binding lives in `broker/control/`).
/readyz reports the folders missing until then.
"""

from __future__ import annotations

import logging
import os

from kombu.exceptions import ConnectionError as BrokerConnectionError
from kombu.transport import filesystem

log = logging.getLogger("kd.worker")


class Channel(filesystem.Channel):
    def _folders(self) -> list[str]:
        return [self.data_folder_in, self.data_folder_out, self.processed_folder, str(self.control_folder)]

    def _get(self, queue):
        try:
            return super()._get(queue)
        except FileNotFoundError as exc:
            missing = [folder for folder in self._folders() if not os.path.isdir(folder)]
            if not missing:
                raise
            for folder in missing:
                os.makedirs(folder, exist_ok=True)
            log.warning("filesystem broker folder(s) %s were missing: recreated; reconnecting",
                        ", ".join(os.path.basename(f.rstrip("/")) for f in missing))
            raise BrokerConnectionError("filesystem broker folders were missing") from exc


class Transport(filesystem.Transport):
    Channel = Channel
