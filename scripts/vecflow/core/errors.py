"""The one exception type vecflow raises for bad input; the CLI prints it as one line and exits 2."""


class VecflowError(Exception):
    """A user-facing error: the message names the file and line or field that is wrong."""


def where(path, line=None, field=None) -> str:
    """Format a location prefix such as ``data.jsonl:12: field 'summary'``."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if field is not None:
        text += f": field '{field}'"
    return text
