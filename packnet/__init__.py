"""packnet: the PackNet-SfM model zoo, geometry and losses on packops."""
from . import models  # cheap: ~0.1 s beyond importing torch and packops
