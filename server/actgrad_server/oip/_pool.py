"""The private descriptor pool of the generated OIP stubs.

The Open Inference Protocol's messages live in the proto package `inference`, as do
Triton's client, KServe's and MLServer's. Registering them in protobuf's default pool
would make importing any of those next to actgrad_server fail with "duplicate symbol
'inference.…'"; a pool of our own keeps the wire format and avoids the clash.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
