"""Security identities: Cilium labels and the identity-relevant label filter (labels); reserved, cluster-local
and CIDR identities with a persistent, deterministic allocator (identities). All pure."""
