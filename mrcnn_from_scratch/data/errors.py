"""DataError: a dataset's file is wrong. Not a bug of ours, so the command line prints it as one line.

The message names the file and, where there is one, the image id and the annotation id.
"""


class DataError(ValueError):
    """A dataset file that cannot be used as it is: a bad annotation JSON, an image that does not decode.

    A ValueError, so that code which caught the ValueErrors of earlier versions still catches it.
    """

    @property
    def line(self) -> str:
        """The message as raised. Raised in a DataLoader worker, the error is raised again in the main
        process with the worker's whole traceback as its message; its last line is the original one."""
        text = str(self).strip()
        if "Traceback" not in text:
            return text
        last = text.splitlines()[-1]
        return last.partition(f"{type(self).__name__}: ")[2] or last
