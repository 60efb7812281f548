"""Key custody: the age recipients a user registers, and how a file key reaches a user.

A user may register up to ``MAX_RECIPIENTS`` X25519 age recipients (``age1...``) and may require
sealing. ``KeyCustody.deliver`` is the one place that decides the form of a key answer, for
whoever the key goes to (the owner today; anybody else the caller has let fetch it): sealed to
*that user's* recipients when they have any, so the plain key never appears in the HTTP answer;
plain when they have none (the seed's answer) or ask for it, unless they require sealing. The
cryptography is ``crypto.seal``'s (age, through pyrage). No Flask here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cryptofiles import crypto
from cryptofiles.audit import security_event
from cryptofiles.storage import Storage, User

# A few keys (a laptop, a phone, a backup): enough for a person, small enough to seal to at once.
MAX_RECIPIENTS = 5


class KeyCustodyError(Exception):
    """Base of this module's errors; the message is safe to show to the client."""


class InvalidRecipients(KeyCustodyError):
    """A recipient list or sealing rule that breaks the rules; nothing was changed."""


class SealingRequired(KeyCustodyError):
    """A plain key was asked for by a user who requires sealed delivery."""


class AccountGone(KeyCustodyError):
    """The account disappeared while its recipients were being changed."""


@dataclasses.dataclass(frozen=True)
class KeyDelivery:
    """A key answer: either ``key`` (plain) or ``sealed`` (an age file to ``recipients``)."""

    key: bytes | None = dataclasses.field(repr=False)
    sealed: bytes | None = dataclasses.field(repr=False)
    recipients: tuple[str, ...] = ()

    @property
    def is_sealed(self) -> bool:
        return self.sealed is not None


def check_recipients(recipients: Sequence[str], require_sealed: bool) -> tuple[str, ...]:
    """The recipients in canonical form, in the order given; InvalidRecipients naming the rule
    (and the position, never the text) that one of them breaks."""
    if len(recipients) > MAX_RECIPIENTS:
        raise InvalidRecipients(f"At most {MAX_RECIPIENTS} recipients may be registered.")
    canonical: list[str] = []
    for position, text in enumerate(recipients):
        try:
            recipient = crypto.parse_recipient(text)
        except crypto.RecipientError:
            raise InvalidRecipients(
                f"recipients[{position}] is not an age X25519 recipient (age1...)."
            ) from None
        if recipient in canonical:
            raise InvalidRecipients(f"recipients[{position}] is listed twice.")
        canonical.append(recipient)
    if require_sealed and not canonical:
        raise InvalidRecipients("require_sealed needs at least one recipient to seal keys to.")
    return tuple(canonical)


class KeyCustody:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def set_recipients(
        self, user: User, recipients: Sequence[str], require_sealed: bool | None = None
    ) -> User:
        """Replace the user's recipients (``require_sealed`` None: keep the current rule), all
        checked before anything is written; the user as now stored."""
        sealed = user.require_sealed if require_sealed is None else require_sealed
        canonical = check_recipients(recipients, sealed)
        updated = self.storage.users.set_recipients(user.public_id, canonical, sealed)
        if updated is None:
            raise AccountGone("This account no longer exists.")
        security_event(
            "account.recipients_changed", recipients=len(canonical), require_sealed=sealed
        )
        return updated

    def deliver(
        self, key: bytes, user: User, *, plain: bool = False, armor: bool = True
    ) -> KeyDelivery:
        """How ``key`` goes to ``user``: sealed to all of their recipients (armored or binary),
        or plain when they have none or ask for it (``plain``), unless they require sealing."""
        if user.require_sealed and (plain or not user.recipients):
            # Without recipients too: a rule the account set is never relaxed by a missing list.
            security_event("key.plain_refused")
            raise SealingRequired(
                "This account requires sealed key delivery: ask without plain=1, and open "
                "the answer with your age identity (or turn require_sealed off in "
                "PUT /account/recipients)."
            )
        if plain or not user.recipients:
            return KeyDelivery(key, None)
        return KeyDelivery(None, crypto.seal(key, user.recipients, armor=armor), user.recipients)
