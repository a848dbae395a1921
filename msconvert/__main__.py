"""`python -m msconvert` and the `msconvert` console script."""

from msconvert.convert.cli import main

if __name__ == "__main__":
    main()
