"""Print the project venv's versions of the libraries a model version is loaded with, as pip
pins, for another environment that must load versions exactly as the gateway does (MLServer's,
for the differential test and the benchmark). torch only where the project has it (the [torch]
extra), and without its local label (``+cpu``): pip then takes the same CPU wheel."""

from importlib.metadata import PackageNotFoundError, version

for package in ("mlflow", "scikit-learn", "pandas", "numpy", "torch"):
    try:
        print(f"{package}=={version(package).split('+')[0]}")
    except PackageNotFoundError:
        pass
