"""The compiled parts of cluster_sim (everything else is in pyproject.toml): the latency
bookkeeping (cluster/_latency.pyx), a batch of route moves' per-link sums
(kernel/fluid/_routes.pyx) and the network's sums at a rate change (kernel/fluid/_sums.pyx).
Optional: without a C compiler the install goes on and numpy's code runs instead, with the same
results (kernel/compiled.py)."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        # the same floating-point operations as numpy's: no fused multiply-add
        [Extension(name, [path], extra_compile_args=["-O2", "-ffp-contract=off"], optional=True)
         for name, path in (("cluster_sim.cluster._latency", "cluster_sim/cluster/_latency.pyx"),
                            ("cluster_sim.kernel.fluid._routes", "cluster_sim/kernel/fluid/_routes.pyx"),
                            ("cluster_sim.kernel.fluid._sums", "cluster_sim/kernel/fluid/_sums.pyx"))],
        compiler_directives={"language_level": 3},
    ),
)
