"""lumos_megatron: Megatron-Core training system for Lumos-1-style autoregressive video generators.

Importing the package is cheap: megatron-core and the model code load only when a submodule that
needs them is imported.
"""

import warnings

__version__ = "0.1.0"

# Importing megatron-core without TransformerEngine/Apex (every CPU machine) emits four
# UserWarnings from four of its modules, in every process. That is our supported setup, and
# whether TE is there is checked where it matters (model.attention_backend=te_bias), so our
# commands print none of them. The filter matches only those messages.
warnings.filterwarnings("ignore", message=r"Transformer Engine and Apex are not installed",
                        category=UserWarning)
# Two more that every model build emits and nobody can act on: the norm fallback without Apex
# (we choose torch norms ourselves) and megatron's own use of a deprecated cuda_graph_scope value
# in TransformerConfig. Filtered here once, so the Python API (load_model, build_model_chunks)
# is as quiet as the commands.
warnings.filterwarnings("ignore", message=r"Apex is not installed\. Falling back to Torch Norm", category=UserWarning)
warnings.filterwarnings("ignore", message=r".*full scope is deprecated.*", category=UserWarning)
