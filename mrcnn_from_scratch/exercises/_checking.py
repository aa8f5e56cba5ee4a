"""What every chapter's checker does: run the learner's function on fixed cases, compare, explain.

A checker is a list of `Case`s, a reference function (the package's finished version) and a way to
compare two outputs. `run_cases` stops at the first case the learner's function gets wrong and raises
an AssertionError that shows that case's input, the expected output and the received one, so the
learner can rerun exactly that input.
"""
import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

# Tensors with at most this many rows are printed in full in a failure message.
_MAX_ROWS_SHOWN = 20


@dataclass
class Case:
    """One input for the function under test.

    Attributes:
        name: what the case is about, e.g. "empty input"; shown when it fails.
        args: the arguments by name, passed positionally in this order.
        hint: the usual mistake behind a failure of this case, said after the outputs.
    """

    name: str
    args: dict[str, Any]
    hint: str = ""


# compare(received, expected, case) returns None if `received` is right, else what is wrong with it.
Compare = Callable[[Any, Any, Case], "str | None"]


def run_cases(checker: str, fn: Callable, reference: Callable, cases: list[Case], compare: Compare) -> bool:
    """Run `fn` and `reference` on every case; raise AssertionError at the first mismatch.

    NotImplementedError from `fn` is passed through untouched (an unfilled exercise stub); any other
    exception becomes an AssertionError that names the case, chained to the original.
    Prints a one-line summary and returns True when every case passes.
    """
    for number, case in enumerate(cases, start=1):
        expected = reference(*case.args.values())
        # Give the learner copies, so that we can tell if their function changed its inputs.
        inputs = {name: _copy(value) for name, value in case.args.items()}
        try:
            received = fn(*inputs.values())
        except NotImplementedError:
            raise
        except Exception as error:
            problem = f"your function raised {type(error).__name__}: {error}"
            raise AssertionError(_report(checker, number, len(cases), case, problem)) from error
        problem = compare(received, expected, case) or _changed_input(inputs, case.args)
        if problem:
            raise AssertionError(_report(checker, number, len(cases), case, problem, expected, received))
    print(f"✓ {checker} passed {len(cases)} cases")
    return True


def tensor_problem(received: Any, expected: Tensor, what: str, rtol: float = 0.0, atol: float = 0.0) -> str | None:
    """Check type, dtype, shape, then values (within rtol/atol; NaN equals NaN). None if all match."""
    if not isinstance(received, Tensor):
        return f"{what} should be a torch.Tensor, got {type(received).__name__}"
    if received.dtype != expected.dtype:
        return f"{what} should have dtype {expected.dtype}, got {received.dtype}"
    if received.shape != expected.shape:
        return f"{what} should have shape {list(expected.shape)}, got {list(received.shape)}"
    close = torch.isclose(received, expected, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return None
    first = tuple(int(i) for i in torch.nonzero(~close)[0])
    where = ", ".join(map(str, first))
    return (
        f"{what} has wrong values: {int((~close).sum())} of {close.numel()} differ, the first at [{where}]: "
        f"expected {expected[first].item():.6g}, got {received[first].item():.6g}"
    )


def _report(checker: str, number: int, total: int, case: Case, problem: str, *outputs: Any) -> str:
    """The failure message: which case, its input, what is wrong, expected and received, a hint."""
    lines = [f'{checker} failed on case {number} of {total}, "{case.name}": {problem}', "Input:"]
    lines += [_show(f"  {name} = ", value) for name, value in case.args.items()]
    if outputs:
        expected, received = outputs
        lines += [_show("Expected: ", expected), _show("Received: ", received)]
    if case.hint:
        lines.append(f"Hint: {case.hint}")
    return "\n".join(lines)


def _show(prefix: str, value: Any) -> str:
    """`prefix` followed by `value`; small tensors in full, large ones as a shape and their first rows."""
    if isinstance(value, Tensor):
        text = repr(value)
        if value.dim() > 0 and len(value) > _MAX_ROWS_SHOWN:
            text = f"Tensor{list(value.shape)} of {value.dtype}, first rows:\n{value[:5]!r}"
    else:
        text = repr(value)
    # Indent continuation lines under the first, so that matrices stay aligned.
    return prefix + text.replace("\n", "\n" + " " * len(prefix))


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, Tensor) else value


def _changed_input(inputs: dict[str, Any], originals: dict[str, Any]) -> str | None:
    for name, value in inputs.items():
        if isinstance(value, Tensor) and not torch.equal(value, originals[name]):
            return f"your function changed its input `{name}` in place; work on a copy (x = x + 1, not x += 1)"
    return None


def keeping_random_state(check: Callable) -> Callable:
    """Run a checker without changing the caller's global random state: building modules draws from it."""

    @functools.wraps(check)
    def wrapped(fn: Callable) -> bool:
        with torch.random.fork_rng(devices=[]):
            return check(fn)

    return wrapped
