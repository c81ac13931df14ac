"""Network policy: model and validation (parse), compiler to per-endpoint MapState (compiler), the reference
datapath lookup (lookup), and `palisade policy trace` (trace). All pure."""
