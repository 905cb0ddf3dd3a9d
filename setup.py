from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="agentainer",
    version="0.1.0",
    description="Run LLM agents as Docker containers behind one proxy, with a durable "
                "request journal",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["agentainer", "agentainer.*"]),
    install_requires=[
        "falcon>=4,<5",
        "waitress>=3,<4",
        "docker>=7,<8",
        "redis[hiredis]>=5",
        "rq>=2",
        "requests>=2.31",
        "supervisor>=4.2",
        "prometheus-client>=0.20",
    ],
    extras_require={"dev": ["pytest>=8", "argparse-manpage>=4.5", "setuptools>=68", "wheel",
                            "schemathesis>=4.32,<5", "import-linter>=2.17,<3", "mypy>=1.11",
                            "types-docker", "types-waitress",
                            # NOTE: the tests check webhook signatures with the reference
                            # implementation (the server signs with the standard library)
                            "standardwebhooks>=1.1,<2"]},
    scripts=sorted(glob("bin/agentainer*")),
    data_files=[("share/man/man1", sorted(glob("man/*.1")))],
)
