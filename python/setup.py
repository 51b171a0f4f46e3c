"""pip install ./python  (offline: setuptools and numpy from Debian, nothing from PyPI).

The package is pure Python over libdinoscope.so (ctypes). At build time the
repository's build/ folder and the CMake install prefix, when they hold the
library, are recorded in dinoscope/_paths.py so that the installed package
finds it; DINOSCOPE_LIBRARY (the file) or DINOSCOPE_PREFIX override."""
import os
import re

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def version():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        return re.search(r"project\(dinoscope VERSION ([0-9.]+)", f.read()).group(1)


def library_dirs():
    dirs = []
    build = os.path.join(ROOT, "build")
    prefix = os.environ.get("DINOSCOPE_PREFIX")
    cache = os.path.join(build, "CMakeCache.txt")
    if not prefix and os.path.exists(cache):
        with open(cache) as f:
            m = re.search(r"^CMAKE_INSTALL_PREFIX:PATH=(.*)$", f.read(), re.M)
            prefix = m and m.group(1)
    if prefix:
        dirs.append(os.path.join(prefix, "lib"))
    dirs.append(build)
    return dirs


class BuildPy(build_py):
    def run(self):
        super().run()
        out = os.path.join(self.build_lib, "dinoscope", "_paths.py")
        with open(out, "w") as f:
            f.write("# written by setup.py: where libdinoscope.so was found at install time\n")
            f.write("LIBRARY_DIRS = %r\n" % (library_dirs(),))


setup(name="dinoscope", version=version(), description="anomaly detection with frozen DINOv2 features (libdinoscope)",
      packages=["dinoscope"], python_requires=">=3.9", install_requires=["numpy"], cmdclass={"build_py": BuildPy})
