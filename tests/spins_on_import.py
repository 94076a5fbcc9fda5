"""A module whose import, in an isolate, says so on the port named
"spins_on_import" and then spins until the isolate is killed."""

import _interpreters

if _interpreters.get_current()[0] != _interpreters.get_main()[0]:
    import subiso

    subiso.IsolateNameServer.lookup_port_by_name("spins_on_import").send("importing")
    while True:
        pass


def answer():
    return 42
