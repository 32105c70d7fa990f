"""What makes two function calls one: the function's name, the key, the arguments' kinds.

Found by attacking idempotent functions from outside their tests: each case here once let a
call get another call's result, run twice, or fail in a way that blocked its key. Both
storages (test_behaviour's storage matrix) where the storage matters.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import uuid
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from cryptography.fernet import Fernet
from django.db import transaction
from django.test import override_settings

from django_idempotency.functions import (
    CallInProgress,
    CallInTransaction,
    CallMismatch,
    CallResultUnreadable,
    aonce,
    idempotent_function,
    once,
)
from django_idempotency.models import IdempotencyKey
from django_idempotency.results import DataclassSerializer
from tests.records import stored_records
from tests.test_behaviour import storage  # noqa: F401  (the storage matrix)
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def charge_card(order_id: int) -> str:
    Execution.objects.create(label="charge")
    return f"charged {order_id}"


def refund_card(order_id: int) -> str:
    Execution.objects.create(label="refund")
    return f"refunded {order_id}"


# Names: every partial is functools.partial, every lambda of a function one name


@pytest.mark.parametrize(
    "function",
    [functools.partial(charge_card, 42), lambda: charge_card(42)],
    ids=["partial", "lambda"],
)
def test_a_function_without_a_name_of_its_own__needs_a_scope(function: Any) -> None:
    with pytest.raises(TypeError, match="give it a scope"):
        once("order-42", function)
    assert once("order-42", function, scope="charges") == "charged 42"


def test_two_partials_with_scopes__never_share_a_result() -> None:
    charged = once("order-42", functools.partial(charge_card, 42), scope="charges")
    refunded = once("order-42", functools.partial(refund_card, 42), scope="refunds")

    assert (charged, refunded) == ("charged 42", "refunded 42")


def test_a_nested_function_decorated_without_a_scope__is_refused_where_it_is_decorated() -> None:
    with pytest.raises(TypeError, match="give it a scope"):

        @idempotent_function(key="n")
        def nested(n: int) -> int:
            return n


# Keys


@idempotent_function(key="request_id")
def send_payout(account: str, amount: int, request_id: str | None = None) -> str:
    Execution.objects.create(label=f"payout {account}")
    return f"paid {account}"


@pytest.mark.parametrize("request_id", [None, ""])
def test_no_key__is_refused_and_runs_nothing(request_id: str | None) -> None:
    with pytest.raises(ValueError, match="needs a key"):
        send_payout("acct_1", 100, request_id=request_id)
    assert Execution.objects.count() == 0


def test_a_key_or_fingerprint_longer_than_a_column__is_stored_by_its_digest(
    storage: str,  # noqa: F811
) -> None:
    long_key, long_fingerprint = "k" * 300, "f" * 200

    assert once(long_key, str, scope="long", fingerprint=long_fingerprint) == ""
    assert once(long_key, str, scope="long", fingerprint=long_fingerprint) == ""
    ((_scope, key, _state),) = stored_records()
    assert len(key) == 64


# Arguments: fingerprinted by kind and value, never by str()


class Service:
    @idempotent_function(key="order_id")
    def pay(self, order_id: int) -> str:
        Execution.objects.create(label="pay")
        return "paid"


def test_a_method_called_again_on_another_instance__is_the_same_call() -> None:
    assert Service().pay(7) == Service().pay(7) == "paid"
    assert Execution.objects.count() == 1


@idempotent_function(key="batch")
def allocate(batch: str, amounts: Any) -> str:
    Execution.objects.create(label="allocate")
    return "allocated"


@pytest.mark.parametrize(
    ("first", "other"),
    [({1: 100}, {"1": 100}), ({"vip"}, "{'vip'}"), (Decimal("1"), "1"), (1, 1.0)],
    ids=["int-and-str-keys", "set-and-its-text", "decimal-and-text", "int-and-float"],
)
def test_arguments_of_other_kinds__are_other_calls(first: Any, other: Any) -> None:
    allocate("b1", first)

    with pytest.raises(CallMismatch):
        allocate("b1", other)


@pytest.mark.parametrize(
    "amounts",
    [{uuid.UUID(int=1): 1}, {1: 1, "x": 2}, {"b": [1, {"c": (2, 3)}], "a": frozenset({4})}],
    ids=["uuid-keys", "mixed-keys", "nested"],
)
def test_arguments_with_any_keys__fingerprint_and_replay(amounts: Any) -> None:
    assert allocate("b2", amounts) == allocate("b2", amounts) == "allocated"
    assert Execution.objects.count() == 1


def test_an_argument_without_a_canonical_form__is_refused_before_running() -> None:
    with pytest.raises(TypeError, match="cannot fingerprint an argument of type"):
        allocate("b3", object())
    assert Execution.objects.count() == 0


def test_a_fingerprint_callable__decides_what_tells_a_reuse_apart() -> None:
    @idempotent_function(key="batch", scope="batches", fingerprint=lambda batch, amounts: batch)
    def allocate_any(batch: str, amounts: Any) -> str:
        Execution.objects.create(label="allocate")
        return "allocated"

    assert allocate_any("b4", object()) == allocate_any("b4", object()) == "allocated"
    assert Execution.objects.count() == 1


# Results


@dataclasses.dataclass
class Receipt:
    amount: Decimal
    total: Decimal = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.total = self.amount * 2


@idempotent_function(key="order_id", serializer=DataclassSerializer(Receipt))
def receipt(order_id: int) -> Receipt:
    Execution.objects.create(label="receipt")
    return Receipt(Decimal("5"))


@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_a_result_that_cannot_be_loaded_back__is_not_stored_and_rolls_back(
    storage_backend: str,
) -> None:
    for _ in range(2):  # the key is freed: the retry runs again and fails the same way
        with pytest.raises(TypeError):
            receipt(1)
    assert Execution.objects.count() == 0
    assert stored_records() == []


@dataclasses.dataclass
class Line:
    sku: str
    price: Decimal


@dataclasses.dataclass
class Invoice:
    lines: list[Line]
    by_sku: dict[str, Line]
    sent_at: datetime.datetime
    first: Line | None = None


def test_a_dataclass_with_lists_of_dataclasses_and_microseconds__comes_back_exactly() -> None:
    sent = datetime.datetime(2026, 12, 4, 9, 30, 0, 123456, tzinfo=datetime.UTC)
    invoice = Invoice([Line("a", Decimal("1.10"))], {"b": Line("b", Decimal("2"))}, sent)
    codec = DataclassSerializer(Invoice)

    assert codec.loads(codec.dumps(invoice)) == invoice


@idempotent_function(key="order_id")
def card(order_id: int) -> dict[str, str]:
    Execution.objects.create(label="card")
    return {"pan_last4": "4242", "name": "Alice Example"}


def test_a_result__is_sealed_when_encryption_is_on_and_unreadable_without_its_key(
    storage: str,  # noqa: F811
) -> None:
    keys = [Fernet.generate_key().decode()]
    encrypted = override_settings(
        IDEMPOTENCY_ENCRYPTOR="django_idempotency.encryption.FernetEncryptor",
        IDEMPOTENCY_ENCRYPTION_KEYS=keys,
    )
    with encrypted:
        first = card(1)
        assert card(1) == first
    if storage == "database":
        assert b"Alice" not in bytes(IdempotencyKey.objects.get().response_body)
    with (
        override_settings(  # the key rotated out: never run again, never read in clear
            IDEMPOTENCY_ENCRYPTOR="django_idempotency.encryption.FernetEncryptor",
            IDEMPOTENCY_ENCRYPTION_KEYS=[Fernet.generate_key().decode()],
        ),
        pytest.raises(CallResultUnreadable),
    ):
        card(1)
    assert Execution.objects.count() == 1


@idempotent_function(key="n", serializer=DataclassSerializer(Line))
def wrong_type(n: int) -> Any:
    Execution.objects.create(label="wrong")
    return {"sku": "a"}


@pytest.mark.parametrize(
    "storage_backend", [pytest.param("cache", marks=pytest.mark.redis)], indirect=True
)
def test_a_result_of_the_wrong_type_on_redis__keeps_the_key_until_its_lease_ends(
    storage_backend: str,
) -> None:
    # The function ran and its effects stand (no transaction): running it again at once
    # would repeat them, so its key stays in flight, as docs/functions.md says.
    with pytest.raises(TypeError):
        wrong_type(1)
    with pytest.raises(CallInProgress):
        wrong_type(1)
    assert Execution.objects.count() == 1


# Async


@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_async__inside_the_callers_transaction_is_refused(storage_backend: str) -> None:
    async def work() -> str:
        return "ok"

    with transaction.atomic(), pytest.raises(CallInTransaction):
        async_to_sync(aonce)("a1", work, scope="work")
    assert stored_records() == []


@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_a_result_the_store_cannot_take__rolls_back_and_says_so(storage_backend: str) -> None:
    from django_idempotency.outcomes import Outcome
    from django_idempotency.storage import StorageUnavailable
    from django_idempotency.testing import outcomes
    from tests.store_faults import failing_queries, on_the_table

    with (
        outcomes() as seen,
        failing_queries(on_the_table("UPDATE")),
        pytest.raises(StorageUnavailable),
    ):
        card(7)
    assert Outcome.STORE_UNAVAILABLE in seen.outcomes
    assert Execution.objects.count() == 0


@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_a_record_whose_result_was_not_stored__is_never_run_again(storage_backend: str) -> None:
    from django_idempotency.calls import Call
    from django_idempotency.functions import CallNotStored
    from tests.factories import IdempotencyKeyFactory

    call = Call.prepare("8", card, (8,), {}, None, None, None, None, None)
    IdempotencyKeyFactory.create(
        scope=call.scope,
        key="8",
        fingerprint=call.digest,
        state=IdempotencyKey.State.NOT_REPLAYABLE,
    )
    with pytest.raises(CallNotStored):
        once("8", card, 8)
    assert Execution.objects.count() == 0


def test_async__disabled_runs_every_call(settings: Any) -> None:
    settings.IDEMPOTENCY_DISABLED = True
    runs: list[int] = []

    async def work() -> int:
        runs.append(1)
        return len(runs)

    assert [async_to_sync(aonce)("a2", work, scope="work") for _ in range(2)] == [1, 2]


def test_async__waits_for_a_running_call_then_says_it_still_runs(storage: str) -> None:  # noqa: F811
    from django_idempotency.calls import Call

    async def work() -> str:
        return "ok"

    Call.prepare("a3", work, (), {}, "work", None, None, 60, None).claim()  # another's
    with pytest.raises(CallInProgress):
        async_to_sync(aonce)("a3", work, scope="work", wait_timeout=0.2)


def test_async__a_call_that_outlived_its_lease__stores_nothing(storage: str) -> None:  # noqa: F811
    from django_idempotency.functions import CallLeaseExpired
    from tests.leases import expire_now

    async def late() -> str:
        from asgiref.sync import sync_to_async

        await sync_to_async(expire_now)("a4")
        return "late"

    with pytest.raises(CallLeaseExpired):
        async_to_sync(aonce)("a4", late, scope="late")


def test_async__a_result_it_cannot_serialize__keeps_the_key_in_flight(storage: str) -> None:  # noqa: F811
    async def unserializable() -> object:
        return object()

    with pytest.raises(TypeError):
        async_to_sync(aonce)("a5", unserializable, scope="odd")
    with pytest.raises(CallInProgress):  # it ran: a retry must not run it again at once
        async_to_sync(aonce)("a5", unserializable, scope="odd")


def test_once__positional_and_keyword_arguments_are_one_call() -> None:
    assert once("o1", charge_card, 1) == once("o1", charge_card, order_id=1) == "charged 1"
    assert Execution.objects.count() == 1
