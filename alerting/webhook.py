"""Optional webhook sink: POST each defect event as JSON, with a timeout and retries."""

import time
import urllib.error
import urllib.request

from shared.logging import get_logger

log = get_logger("lineguard.webhook")


def post_event(url: str, body: bytes, timeout_s: float, retries: int, token: str | None = None,
               backoff_s: float = 0.5) -> bool:
    """True when the endpoint answered 2xx; retries on errors and 5xx/429, not on other 4xx."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    for attempt in range(retries + 1):
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                response.read(1024)
                return True
        except urllib.error.HTTPError as error:
            retryable = error.code >= 500 or error.code == 429
            log.warning("webhook refused the event", status=error.code, attempt=attempt + 1,
                        retrying=retryable and attempt < retries)
            if not retryable:
                return False
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            log.warning("webhook unreachable", error=str(error), attempt=attempt + 1,
                        retrying=attempt < retries)
        if attempt < retries:
            time.sleep(backoff_s * 2**attempt)
    return False
