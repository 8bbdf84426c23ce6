"""The actor runtime: addresses, bounded mailboxes, ``tell``/``ask``, supervision, registry.

An actor is an async function ``run(mailbox, *, task_status)`` started under a
:class:`Supervisor`; it reports readiness with ``task_status.started()`` and then receives
:class:`Envelope` objects from its :class:`Mailbox`, answering asks with ``envelope.respond`` or
``envelope.fail``. Callers hold an :class:`ActorRef` and use ``tell`` (fire and forget, with
backpressure) or ``ask`` (request/reply with a timeout).
"""

from actors.runtime._address import LOCAL_NODE, Address
from actors.runtime._mailbox import ActorRef, Envelope, LocalRef, Mailbox, Reply
from actors.runtime._registry import Registry
from actors.runtime._supervisor import ChildSpec, Intensity, Restart, Supervisor, run_supervisor
from actors.runtime.errors import (
    ActorCrashed,
    ActorError,
    ActorUnavailable,
    AskTimeout,
    ChildRetired,
    MailboxFull,
    SupervisorEscalation,
)
from cpms.kernel.messages import Request

__all__ = [
    "LOCAL_NODE",
    "ActorCrashed",
    "ActorError",
    "ActorRef",
    "ActorUnavailable",
    "Address",
    "AskTimeout",
    "ChildRetired",
    "ChildSpec",
    "Envelope",
    "Intensity",
    "LocalRef",
    "Mailbox",
    "MailboxFull",
    "Registry",
    "Reply",
    "Request",
    "Restart",
    "Supervisor",
    "SupervisorEscalation",
    "run_supervisor",
]
