"""Eight fake CPU devices for every test, so sharded code runs on a real (simulated) mesh.
Unsharded arrays live on device 0 as usual; this must run before JAX initialises its backend."""
import os
import sys

import jax

jax.config.update('jax_num_cpu_devices', 8)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
