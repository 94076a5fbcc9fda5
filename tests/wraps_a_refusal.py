"""Imports like numpy does: an extension's refusal to load comes wrapped in
a long ImportError of the package's own, without ``name``."""

try:
    import _testsinglephase  # noqa: F401
except ImportError as error:
    raise ImportError(
        "\n\nIMPORTANT: PLEASE READ THIS FOR ADVICE ON HOW TO SOLVE THIS ISSUE!\n\n"
        + "Importing the C-extensions failed. " * 20
        + f"\n\nOriginal error was: {error}\n"
    ) from None
