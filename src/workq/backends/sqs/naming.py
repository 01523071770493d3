"""SQS queue names for lanes and dead-letter queues (no client library imported here).

SQS names allow only ``[A-Za-z0-9_-]`` and 80 characters, the same alphabet as workq's
queue and tenant names, so the parts are joined with an escape rather than a reserved
character: every ``_`` inside a name is doubled, and a single ``_`` followed by a
letter separates parts:

====================================  ===========================================
lane / queue                          SQS name
====================================  ===========================================
queue ``reports``, default lane       ``reports`` (exactly the queue's name)
queue ``reports``, priority 5         ``reports_p5``
queue ``reports``, priority 5, acme   ``reports_p5_tacme``
queue ``my_q``, tenant ``a_b``        ``my__q_p0_ta__b``
dead letters of ``reports``           ``reports_dlq``
too long                              ``<start of name>_x<hash>`` / ``..._y<hash>``
====================================  ===========================================

The default lane (no tenant, priority 0) is the SQS queue named as the workq queue
(after ``queue_prefix``), so plain SQS clients on either end interoperate; with
``default_lane=suffixed`` it is ``<queue>_p0`` like the other lanes (workq before 0.3).
The other names are injective, and ``base + "_p"`` is a ``QueueNamePrefix`` that lists
exactly one queue's other lanes. A queue part too long for the budget is shortened and
suffixed ``_x`` + 12 hex digits of its SHA-256; a tenant part likewise with ``_y``, the
tenant then being read back from the lane queue's ``workq-tenant`` tag.

An exact default lane can coincide with another queue's lane or dead-letter queue
(queue ``a_p5`` and priority 5 of queue ``a``; queue ``a_dlq`` and the dead letters of
``a``): do not give queues such names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection

from ...errors import ConfigurationError
from ...lanes import Lane
from ...names import NAME_PATTERN
from ...spec import QueueSpec

__all__ = [
    "TAG",
    "base_name",
    "check_prefix",
    "dlq_name",
    "lane_name",
    "lane_prefix",
    "lane_tags",
    "parse_lane",
    "queue_of_dlq",
    "spec_from_tags",
    "spec_tags",
]

MAX_NAME = 80
#: Longest prefix + queue part, leaving room for ``_p255`` and a hashed tenant part.
BASE_BUDGET = 60
MAX_PREFIX = 20
HASH_LEN = 12

_PREFIX_RE = re.compile(rf"[A-Za-z0-9_-]{{0,{MAX_PREFIX}}}")
_LANE_RE = re.compile(rf"_p(\d{{1,3}})(?:_t(.+)|_y([0-9a-f]{{{HASH_LEN}}}))?")


def check_prefix(prefix: str) -> str:
    """Validate the ``queue_prefix`` setting."""
    if not _PREFIX_RE.fullmatch(prefix):
        raise ConfigurationError(
            f"queue_prefix={prefix!r}: must match [A-Za-z0-9_-]{{0,{MAX_PREFIX}}} "
            "(SQS queue names allow only those characters)"
        )
    return prefix


def _esc(name: str) -> str:
    return name.replace("_", "__")


def _unesc(text: str) -> str | None:
    """Undo ``_esc``; None when ``text`` has a lone ``_`` (so it is not an escaped name)."""
    if re.search(r"(?<!_)(?:__)*_(?!_)", text):
        return None
    return text.replace("__", "_")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def base_name(prefix: str, queue: str) -> str:
    """The part every SQS name of ``queue`` starts with."""
    budget = BASE_BUDGET - len(prefix)
    if len(_esc(queue)) <= budget:
        return prefix + _esc(queue)
    head = ""
    for ch in queue:
        if len(head) + len(_esc(ch)) > budget - HASH_LEN - 2:
            break
        head += _esc(ch)
    return f"{prefix}{head}_x{_digest(queue)}"


def lane_prefix(prefix: str, queue: str) -> str:
    """The ``QueueNamePrefix`` listing exactly ``queue``'s lanes."""
    return base_name(prefix, queue) + "_p"


def lane_name(prefix: str, lane: Lane, exact: bool = True) -> str:
    """The SQS queue name of a lane; ``exact``: the default lane is named as the queue."""
    default = lane.tenant is None and lane.priority == 0
    if exact and default and len(prefix) + len(lane.queue) <= MAX_NAME:
        return prefix + lane.queue
    name = f"{base_name(prefix, lane.queue)}_p{lane.priority}"
    if lane.tenant is None:
        return name
    readable = f"{name}_t{_esc(lane.tenant)}"
    if len(readable) <= MAX_NAME:
        return readable
    return f"{name}_y{_digest(lane.tenant)}"


def dlq_name(prefix: str, queue: str) -> str:
    """The SQS queue name of ``queue``'s dead-letter queue (it also carries the spec tags)."""
    return base_name(prefix, queue) + "_dlq"


def queue_of_dlq(prefix: str, name: str, names: Collection[str] = ()) -> str | None:
    """The workq queue whose dead-letter queue is named ``name``, or None if it is none.

    A queue name too long for its SQS names is hashed there; it is then found among
    ``names`` (other SQS queue names) as the queue's default lane, if that exists.

    >>> queue_of_dlq("dev-", "dev-my__q_dlq"), queue_of_dlq("", "a_p1_dlq")
    ('my_q', None)
    """
    if not name.startswith(prefix) or not name.endswith("_dlq"):
        return None
    base = name[len(prefix) : -len("_dlq")]
    queue = _unesc(base)
    if queue is not None:
        return queue if NAME_PATTERN.fullmatch(queue) and dlq_name(prefix, queue) == name else None
    for other in names:
        candidate = other[len(prefix) :]
        if (
            other.startswith(prefix)
            and NAME_PATTERN.fullmatch(candidate)
            and dlq_name(prefix, candidate) == name
        ):
            return candidate
    return None


def parse_lane(
    prefix: str, queue: str, name: str, exact: bool = True
) -> tuple[int, str | None, bool] | None:
    """(priority, tenant, hashed) of a lane's SQS name, or None if it is not a lane of
    ``queue``. ``hashed`` means the tenant is only in the queue's tag (tenant is None)."""
    if name == lane_name(prefix, Lane(queue), exact):
        return 0, None, False
    base = base_name(prefix, queue)
    if not name.startswith(base):
        return None
    match = _LANE_RE.fullmatch(name[len(base) :])
    if match is None:
        return None
    priority = int(match.group(1))
    if str(priority) != match.group(1):
        return None
    if match.group(3) is not None:
        return priority, None, True
    if match.group(2) is None:
        if lane_name(prefix, Lane(queue, None, priority), exact) != name:
            return None
        return priority, None, False
    tenant = _unesc(match.group(2))
    if tenant is None:
        return None
    if lane_name(prefix, Lane(queue, tenant, priority), exact) != name:
        return None
    return priority, tenant, False


#: Tags workq puts on the SQS queues it makes start with this.
TAG = "workq-"


def spec_tags(spec: QueueSpec, implicit: bool) -> dict[str, str]:
    """The tags that store a queue's declared settings (on its dead-letter queue)."""
    tags = {TAG + f: str(getattr(spec, f)).lower() for f in QueueSpec.SETTINGS}
    tags[TAG + "implicit"] = "true" if implicit else "false"
    return tags


def spec_from_tags(queue: str, tags: dict[str, str]) -> tuple[QueueSpec | None, bool]:
    """(stored spec, whether it was an implicit declaration); (None, False) if none is."""
    if not all(TAG + f in tags for f in QueueSpec.SETTINGS):
        return None, False
    try:
        spec = QueueSpec(
            queue,
            max_priority=int(tags[TAG + "max_priority"]),
            max_attempts=int(tags[TAG + "max_attempts"]),
            retry_delay=float(tags[TAG + "retry_delay"]),
            lease=float(tags[TAG + "lease"]),
            dead_letter=tags[TAG + "dead_letter"] == "true",
        )
    except (ValueError, ConfigurationError):
        return None, False
    return spec, tags.get(TAG + "implicit") == "true"


def lane_tags(lane: Lane) -> dict[str, str]:
    """Tags of a lane queue workq makes: which queue, priority and tenant it serves."""
    tags = {TAG + "queue": lane.queue, TAG + "priority": str(lane.priority)}
    if lane.tenant is not None:
        tags[TAG + "tenant"] = lane.tenant
    return tags
