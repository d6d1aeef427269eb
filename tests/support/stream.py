"""A background producer: events keep arriving while a test stops, kills or reloads workers."""

from __future__ import annotations

import threading
import time


class Stream(threading.Thread):
    """Sends ``events`` (key, value) at about ``rate`` per second, then flushes."""

    def __init__(self, producer, topic: str, events: list[tuple[bytes, bytes]], rate: float = 2000.0) -> None:
        super().__init__(daemon=True)
        self.producer, self.topic, self.events, self.rate = producer, topic, events, rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            for key, value in self.events:
                self.producer.send(self.topic, key=key, value=value)
                self.sent += 1
                if self.sent % 100 == 0:
                    ahead = self.sent / self.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
            self.producer.flush(timeout=60)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self) -> None:
        self.join(timeout=120)
        assert not self.is_alive() and self.error is None, self.error
