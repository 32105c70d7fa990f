"""Serializers of a function's result: what every call, the first too, gets back.

Through ``idempotent_function`` on both storages (test_behaviour's storage matrix): the
first call returns the stored form, a later call the same, never running again.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from decimal import Decimal
from typing import Any

import pydantic
import pytest
from rest_framework import serializers

from django_idempotency.functions import idempotent_function
from django_idempotency.results import (
    DataclassSerializer,
    DRFSerializer,
    JSONSerializer,
    PydanticSerializer,
)
from tests.test_behaviour import storage  # noqa: F401  (the storage matrix)
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

PAID_AT = datetime.datetime(2026, 12, 4, 9, 30, tzinfo=datetime.UTC)
RECEIPT = uuid.UUID("6f1c2a52-8f3e-4c1a-9d59-0d3b4f7f0a11")


@dataclasses.dataclass(frozen=True)
class Card:
    last4: str
    expires: datetime.date


@dataclasses.dataclass(frozen=True)
class Payment:
    amount: Decimal
    paid_at: datetime.datetime
    receipt: uuid.UUID
    card: Card
    refunded: Decimal | None = None
    note: str = ""


class PaymentModel(pydantic.BaseModel):
    amount: Decimal
    paid_at: datetime.datetime
    receipt: uuid.UUID


class ExecutionSerializer(serializers.ModelSerializer[Execution]):
    class Meta:
        model = Execution
        fields = ["id", "label"]


def twice(function: Any, *args: Any) -> tuple[Any, Any]:
    return function(*args), function(*args)


def test_a_dataclass__comes_back_as_itself_with_its_field_types(storage: str) -> None:  # noqa: F811
    @idempotent_function(key="order_id", scope="pay", serializer=DataclassSerializer(Payment))
    def pay(order_id: int) -> Payment:
        Execution.objects.create(label="pay")
        card = Card("4242", datetime.date(2030, 1, 31))
        return Payment(Decimal("10.50"), PAID_AT, RECEIPT, card, refunded=Decimal("0.50"))

    first, again = twice(pay, 1)

    assert first == again == pay.__wrapped__(1)  # type: ignore[attr-defined]
    assert isinstance(again.card, Card)
    assert isinstance(again.amount, Decimal)
    assert Execution.objects.count() == 2  # the two calls, and __wrapped__ once


def test_a_pydantic_model__comes_back_as_itself(storage: str) -> None:  # noqa: F811
    @idempotent_function(key="order_id", scope="pay", serializer=PydanticSerializer(PaymentModel))
    def pay(order_id: int) -> PaymentModel:
        Execution.objects.create(label="pay")
        return PaymentModel(amount=Decimal("10.50"), paid_at=PAID_AT, receipt=RECEIPT)

    first, again = twice(pay, 1)

    assert first == again == PaymentModel(amount=Decimal("10.50"), paid_at=PAID_AT, receipt=RECEIPT)
    assert Execution.objects.count() == 1


def test_a_drf_serializer__stores_and_returns_the_representation(storage: str) -> None:  # noqa: F811
    @idempotent_function(key="label", scope="record", serializer=DRFSerializer(ExecutionSerializer))
    def record(label: str) -> Execution:
        return Execution.objects.create(label=label)

    first, again = twice(record, "shipped")

    row = Execution.objects.get()
    assert first == again == {"id": row.pk, "label": "shipped"}


def test_a_drf_serializer_with_many__takes_lists() -> None:
    rows = [Execution.objects.create(label=label) for label in ("a", "b")]
    codec = DRFSerializer(ExecutionSerializer, many=True)

    assert codec.loads(codec.dumps(rows)) == [{"id": r.pk, "label": r.label} for r in rows]


def test_json__keeps_what_json_can_and_gives_decimals_as_text() -> None:
    codec = JSONSerializer()

    assert codec.loads(codec.dumps({"amount": Decimal("10.50"), "at": PAID_AT})) == {
        "amount": "10.50",
        "at": "2026-12-04T09:30:00Z",
    }


@pytest.mark.parametrize(
    ("make", "wrong"),
    [
        (lambda: DataclassSerializer(Payment), {"amount": 1}),
        (lambda: PydanticSerializer(PaymentModel), Card("1", datetime.date(2030, 1, 1))),
    ],
)
def test_a_result_of_another_type__is_refused_before_anything_is_stored(
    make: Any, wrong: Any
) -> None:
    with pytest.raises(TypeError, match="expected a"):
        make().dumps(wrong)


@pytest.mark.parametrize(
    ("serializer", "argument"),
    [
        (DataclassSerializer, PaymentModel),
        (
            DataclassSerializer,
            Payment(Decimal(1), PAID_AT, RECEIPT, Card("1", datetime.date(2030, 1, 1))),
        ),
        (PydanticSerializer, Payment),
    ],
)
def test_a_serializer_given_the_wrong_kind_of_class__is_refused_where_it_is_made(
    serializer: Any, argument: Any
) -> None:
    with pytest.raises(TypeError, match="takes a"):
        serializer(argument)


@dataclasses.dataclass
class Shipment:
    route: tuple[str, Decimal]
    note: str = "none"


def test_a_dataclass__rebuilds_fixed_tuples_and_takes_defaults_for_missing_fields() -> None:
    codec = DataclassSerializer(Shipment)

    assert codec.loads(codec.dumps(Shipment(("LIS", Decimal("2.5"))))) == Shipment(
        ("LIS", Decimal("2.5"))
    )
    assert codec.loads(b'{"route":["OPO","1"]}') == Shipment(("OPO", Decimal("1")))


def test_a_dataclass_field_json_cannot_hold__is_a_type_error() -> None:
    with pytest.raises(TypeError):
        DataclassSerializer(Shipment).dumps(Shipment(("LIS", object())))  # type: ignore[arg-type]
