from wrenmq.mqtt import packets as p


def test_publish_qos1_roundtrip_raw(raw):  # [MQTT-4.3.2-2]
    sub = raw(5)
    assert sub.connect("s").reason_code == 0
    assert sub.subscribe("a/+", 1).reason_codes == [1]
    pub = raw(5)
    pub.connect("p")
    ack = pub.publish("a/b", b"x", 1)
    assert ack.reason_code == 0
    msg = sub.expect(p.Publish)
    assert (msg.topic, msg.payload, msg.qos) == ("a/b", b"x", 1)
    sub.send(p.Puback(msg.packet_id))
