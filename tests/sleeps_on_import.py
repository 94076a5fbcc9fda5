"""A module whose import, in an isolate, never ends."""

import _interpreters

if _interpreters.get_current()[0] != _interpreters.get_main()[0]:
    import time

    while True:
        time.sleep(3600)
