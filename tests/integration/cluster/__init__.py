"""A three-node NATS cluster under the real services: node loss, meta leader loss, bucket replicas."""
