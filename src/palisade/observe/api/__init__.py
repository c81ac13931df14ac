"""Generated protobuf / gRPC modules for Hubble's flow, observer and relay APIs (``make proto``; not committed).

Modules: ``flow_pb2``, ``relay_pb2``, ``observer_pb2``, ``observer_pb2_grpc``.
"""
