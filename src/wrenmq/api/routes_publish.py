"""``POST /api/v1/publish`` and ``/api/v1/publish/batch``: publish under the ACL of who asks (the
API key's or console user's name must have ``WRITE`` on the topic, as an MQTT client of that user
would; 403 otherwise), never to ``$`` topics; the broker then publishes it (publish hooks run, with
no client). Also ``POST /publish``, the body existing integrations send (``{"broker": "internal",
...}``); through an external broker connection that is a management action.

A request is checked against the MQTT rules (models.py) and then against this broker's settings
(Maximum QoS, retain available, topic length and levels, max_packet_size); anything refused is a
422 naming the field. A ``Reject`` from a publish hook is a 403 (0x87 Not authorized) or 422 with
its reason and reason code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Response

from ..hooks import WRITE, Reject
from ..mqtt.codec import publish_size as codec_publish_size
from ..mqtt.properties import encode_properties
from ..mqtt.reason_codes import ReasonCode
from .models import (
    BatchItemResult,
    BatchResult,
    CompatPublishRequest,
    CompatPublishResult,
    PublishBatch,
    PublishRequest,
    PublishResult,
)
from .problems import FieldError, Problem, field_error, problem_responses
from .routing import BODY_RESPONSES, WRITE_RESPONSES, Acting, authenticated_router, v1_router

if TYPE_CHECKING:
    from ..broker.broker import Broker
    from ..services.brokers import BrokerConnections
    from .principal import Principal

INTERNAL = "internal"


def publish_size(topic: bytes, payload: bytes, qos: int, properties: bytes) -> int:
    """Bytes of the PUBLISH packet an MQTT 5 subscriber would get (the largest variant)."""
    return codec_publish_size(len(topic), qos, len(properties) + len(payload))


def broker_problems(broker: Broker, request: PublishRequest, loc: tuple[str | int, ...]) -> list[FieldError]:
    """What this broker's settings refuse in ``request`` (the schema has checked the rest)."""
    config = broker.config
    errors = []
    if request.qos > config.limits.maximum_qos:
        message = f"QoS {request.qos} is above the broker's maximum_qos ({config.limits.maximum_qos})"
        errors.append(field_error((*loc, "qos"), message))
    if request.retain and not config.limits.retain_available:
        errors.append(field_error((*loc, "retain"), "retained messages are not available (retain_available)"))
    topic = request.topic
    if len(topic) > config.limits.max_topic_length:
        message = f"the topic is {len(topic)} characters, over max_topic_length ({config.limits.max_topic_length})"
        errors.append(field_error((*loc, "topic"), message))
    if topic.count("/") >= config.limits.max_topic_levels:
        message = (
            f"the topic has {topic.count('/') + 1} levels, over max_topic_levels ({config.limits.max_topic_levels})"
        )
        errors.append(field_error((*loc, "topic"), message))
    payload = request.payload_bytes()
    size = publish_size(topic.encode(), payload, request.qos, encode_properties(request.properties.to_mqtt()))
    if size > config.limits.max_packet_size:
        given = [name for name in ("payload_base64", "payload_json") if getattr(request, name) is not None]
        message = (
            f"the PUBLISH would be {size} bytes, over the broker's max_packet_size ({config.limits.max_packet_size})"
        )
        errors.append(field_error((*loc, given[0] if given else "payload"), message))
    return errors


async def publish(broker: Broker, principal: Principal, request: PublishRequest) -> PublishResult:
    """Publish ``request`` (already checked) if ``principal`` may write its topic (else 403); a
    hook's Reject is raised as a Problem."""
    principal.require(request.topic, WRITE)
    payload = request.payload_bytes()
    try:
        matched = await broker.publish(
            request.topic, payload, request.qos, request.retain, request.properties.to_mqtt()
        )
    except Reject as reject:
        status = 403 if reject.reason_code == ReasonCode.NOT_AUTHORIZED else 422
        raise Problem(
            status,
            f"a publish hook refused the message: {reject}",
            kind="publish-rejected",
            title="Publish rejected",
            reason_code=reject.reason_code,
        ) from None
    return PublishResult(
        topic=request.topic, qos=request.qos, retain=request.retain, payload_size=len(payload), matched=matched
    )


def install(app: FastAPI, broker: Broker, connections: BrokerConnections | None) -> None:
    router = v1_router("publish")
    compat = authenticated_router("", "compatibility")
    rejected = {**WRITE_RESPONSES, **BODY_RESPONSES}

    @router.post("/publish", summary="Publish a message", responses=rejected)
    async def publish_message(principal: Acting, request: PublishRequest) -> PublishResult:
        """The payload is given as ``payload`` (text), ``payload_base64`` or ``payload_json``; MQTT 5
        subscribers get the ``properties``. ``matched`` counts the subscriptions it reached."""
        errors = broker_problems(broker, request, ("body",))
        if errors:
            raise Problem.invalid(errors)
        return await publish(broker, principal, request)

    @router.post("/publish/batch", summary="Publish several messages", responses=rejected)
    async def publish_batch(principal: Acting, batch: PublishBatch) -> BatchResult:
        """Every message is checked first: if any is invalid, none is published (422 naming each
        field as ``body.messages.<index>.<field>``), nor if the ACL refuses any topic (403). Then
        they are published in order; a message a publish hook refuses is reported in its result
        and the others are still published."""
        errors = [
            error
            for index, request in enumerate(batch.messages)
            for error in broker_problems(broker, request, ("body", "messages", index))
        ]
        if errors:
            raise Problem.invalid(errors)
        for request in batch.messages:
            principal.require(request.topic, WRITE)
        results = []
        for index, request in enumerate(batch.messages):
            try:
                result = await publish(broker, principal, request)
            except Problem as problem:
                results.append(
                    BatchItemResult(
                        index=index, published=False, problem=problem.detail, reason_code=problem.reason_code
                    )
                )
            else:
                results.append(BatchItemResult(index=index, published=True, result=result))
        published = sum(1 for item in results if item.published)
        return BatchResult(published=published, rejected=len(results) - published, results=results)

    @compat.post(
        "/publish",
        summary="Publish (the body integrations send: broker, topic, payload, qos, retain, queue)",
        responses={**rejected, **problem_responses(404, 502, 503), 202: {"model": CompatPublishResult}},
    )
    async def compat_publish(
        principal: Acting, request: CompatPublishRequest, response: Response
    ) -> CompatPublishResult:
        """``broker`` is ``internal`` (this broker) or the name of an external broker connection
        (``GET /api/v1/brokers``; 404 "unknown broker" otherwise). ``payload`` is sent as text if it
        is a string, as compact JSON text if it is any other JSON value.

        Through an external broker the answer comes once the remote has acknowledged the message
        (``reason_code``); 503 if it is not connected, unless ``queue`` is true: then the message
        waits in the connection's bounded durable queue and the answer is 202 (503 if the queue
        is full). 502 if the remote refuses the message. Publishing through an external broker
        is a management action (an API key or a console admin); to this one, the ACL decides."""
        inner = request.as_request()
        if request.broker != INTERNAL:
            from .routes_brokers import publish_external

            refusal = principal.manage_refusal()
            if refusal is not None:
                raise Problem(403, refusal)
            payload = inner.payload_bytes()
            code = await publish_external(
                connections, request.broker, inner.topic, payload, inner.qos, inner.retain, request.queue
            )
            if code is None:
                response.status_code = 202
            return CompatPublishResult(
                topic=inner.topic,
                qos=inner.qos,
                retain=inner.retain,
                payload_size=len(payload),
                matched=None,
                broker=request.broker,
                queued=code is None,
                reason_code=code,
            )
        errors = broker_problems(broker, inner, ("body",))
        if errors:
            raise Problem.invalid(errors)
        result = await publish(broker, principal, inner)
        return CompatPublishResult(**result.model_dump(), broker=INTERNAL)

    app.include_router(router)
    app.include_router(compat)
