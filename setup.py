"""The compiled part of cluster_sim (everything else is in pyproject.toml): the per-class loops of
the latency bookkeeping, cluster/_latency.pyx. Optional: without a C compiler the install goes on
and cluster/io.py runs numpy's expressions instead (the same results)."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("cluster_sim.cluster._latency", ["cluster_sim/cluster/_latency.pyx"],
                   # the same floating-point operations as numpy's: no fused multiply-add
                   extra_compile_args=["-O2", "-ffp-contract=off"], optional=True)],
        compiler_directives={"language_level": 3},
    ),
)
