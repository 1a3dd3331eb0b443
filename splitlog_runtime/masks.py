"""Update-mask checks shared by the services that take a FieldMask.

Every bad path gets a BadRequest violation on `update_mask.paths[i]` that
names the path as the client sent it and the paths that are valid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from splitlog_runtime.errors import FieldViolation, InvalidArgument


@dataclass(frozen=True)
class MaskRules:
    """The mask paths of one resource, by how an update may treat them.

    Attributes:
      ignored: paths accepted and left out of the result, such as a field
        that every update sets anyway.
      replaced_whole: mutable fields that an update replaces as a whole, so
        that a path into one of them, such as `split.type`, is rejected with
        a hint to send the whole field.
      article: the indefinite article of `resource` in messages.
    """

    resource: str
    mutable: tuple[str, ...]
    output_only: tuple[str, ...]
    immutable: tuple[str, ...] = ()
    identifier: str = "name"
    ignored: tuple[str, ...] = ()
    replaced_whole: tuple[str, ...] = ()
    article: str = "a"


def resolve_update_mask(
    paths: Sequence[str], rules: MaskRules, populated: Iterable[str]
) -> list[str]:
    """Return the fields an update changes, in the order of `rules.mutable`.

    An empty mask selects every mutable field that the request populates, and
    `*` selects every mutable field. Output-only fields that are populated
    under an empty mask are ignored, because clients often send back a whole
    resource they read.

    Raises:
      InvalidArgument: a path is empty, unknown, not mutable, or `*` is
        combined with other paths. Every bad path gets its own violation.
    """
    if not paths:
        chosen = set(populated)
        return [name for name in rules.mutable if name in chosen]
    violations = []
    for index, path in enumerate(paths):
        problem = _mask_path_problem(path, paths, rules)
        if problem is not None:
            reason, description = problem
            violations.append(
                FieldViolation(f"update_mask.paths[{index}]", description, reason)
            )
    if violations:
        first = violations[0]
        raise InvalidArgument(
            f"{first.field}: {first.description}",
            reason=first.reason,
            metadata={"field": first.field},
            field_violations=violations,
        )
    if "*" in paths:
        return list(rules.mutable)
    return [name for name in rules.mutable if name in paths]


def _mask_path_problem(
    path: str, paths: Sequence[str], rules: MaskRules
) -> tuple[str, str] | None:
    allowed = ", ".join(repr(name) for name in rules.mutable)
    if path == "*":
        if len(paths) > 1:
            return (
                "INVALID_UPDATE_MASK",
                "'*' selects every mutable field and cannot be combined with "
                "other paths; send '*' alone or list the fields",
            )
        return None
    if path in rules.mutable or path in rules.ignored:
        return None
    if not path:
        return (
            "INVALID_UPDATE_MASK",
            "is empty; remove it, or name a field. A REST updateMask with a "
            "leading, trailing or doubled comma, such as ',notes', sends an "
            f"empty path. The mutable fields of {rules.article} {rules.resource} "
            f"are {allowed}",
        )
    if path in rules.output_only or path == "etag":
        return (
            "FIELD_NOT_MUTABLE",
            f"{path!r} is output only and cannot be updated; the mutable fields "
            f"of {rules.article} {rules.resource} are {allowed}",
        )
    if path == rules.identifier:
        return (
            "FIELD_NOT_MUTABLE",
            f"{path!r} identifies the {rules.resource} and cannot be updated; "
            f"the mutable fields are {allowed}",
        )
    if path in rules.immutable:
        return (
            "FIELD_NOT_MUTABLE",
            f"{path!r} is set on create only; the mutable fields of "
            f"{rules.article} {rules.resource} are {allowed}",
        )
    root = path.split(".", 1)[0]
    if root in rules.replaced_whole:
        return (
            "INVALID_UPDATE_MASK",
            f"{path!r} names a part of {root!r}, which is replaced as a whole; "
            f"list {root!r} and send its complete new value",
        )
    return ("UNKNOWN_FIELD_PATH", _unknown_path_message(path, rules))


# A path that the proto3 JSON mapping produced from a name that starts with an
# upper-case letter: it turns 'DisplayName' into '_display_name', writing each
# upper-case letter as '_' and its lower case. JSON paths cannot contain '_'.
_JSON_CONVERTED_PATH = re.compile(r"_[a-z](?:[a-z0-9]|_[a-z])*")


def _unknown_path_message(path: str, rules: MaskRules) -> str:
    """Describe an unknown mask path as the client sent it, with a suggestion.

    A REST or JSON client that sends 'DisplayName' reaches the service as
    '_display_name', so the message shows the name the client most likely
    sent and the path that arrived.
    """
    sent = repr(path)
    if _JSON_CONVERTED_PATH.fullmatch(path):
        original = re.sub(r"_([a-z])", lambda match: match.group(1).upper(), path)
        sent = f"{original!r} (received as {path!r} after the JSON mapping)"
    valid = (
        f"valid paths of {rules.article} {rules.resource} are "
        f"{', '.join(rules.mutable)}, or '*' alone for all of them"
    )
    bare = path.removeprefix(f"{rules.resource}.")
    squashed = re.sub(r"[^a-z0-9]", "", bare.lower())
    for name in rules.mutable:
        if name.replace("_", "") == squashed:
            return f"unknown field path {sent}; did you mean {name!r}? The {valid}"
    return f"unknown field path {sent}; {valid}"
