"""crbook: the curvature rate λ of functions and neural networks.

The curvature rate is the slope of ``log ‖Dⁿ f‖`` against the order ``n``. This
package computes input derivatives of any order exactly and cheaply (univariate
Taylor mode), fits the rate, and carries the tools the book's chapters use.
"""

from crbook import compare, data, models, tracking, train
from crbook._boundary import BoundaryPoints, boundary_points
from crbook._cauchy import taylor_coefficients
from crbook._crr import crr_objective, crr_penalty
from crbook._cumulants import CumulantSplit, cumulant_split, softmax_cumulants
from crbook._curvature import CurvatureRate, curvature_rate, unit_directions
from crbook._directions import WorstDirection, worst_direction
from crbook._profile import choose, profile
from crbook._rate import RateFit, fit_rate
from crbook._regularizer import CRR
from crbook._sam import SAM, frozen_running_stats
from crbook._taylor import Jet, UnsupportedOperationError, directional_derivatives

__all__ = [
    "BoundaryPoints",
    "boundary_points",
    "compare",
    "data",
    "models",
    "tracking",
    "train",
    "CRR",
    "CumulantSplit",
    "CurvatureRate",
    "Jet",
    "RateFit",
    "SAM",
    "UnsupportedOperationError",
    "WorstDirection",
    "choose",
    "crr_objective",
    "crr_penalty",
    "cumulant_split",
    "curvature_rate",
    "directional_derivatives",
    "fit_rate",
    "frozen_running_stats",
    "profile",
    "softmax_cumulants",
    "taylor_coefficients",
    "unit_directions",
    "worst_direction",
]

__version__ = "0.1.0"
