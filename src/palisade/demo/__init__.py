"""The article's scenario, end to end on the embedded runtime (`make demo`), and the real Kafka client wrappers
it and the tests use."""
